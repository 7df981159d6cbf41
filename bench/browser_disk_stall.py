"""Does a studio tab load while the disk under the browser stalls? A profile on disk vs an in-memory context.

    python -m bench.browser_disk_stall               # 2 loads each way, 20 s each
    python -m bench.browser_disk_stall --loads 3 --wait 30

A one-node stand-in cluster (``launch.py``) serves the studio page. Chromium's files go on a small ext4 file system
made for the run (a loop device); ``fsfreeze`` stalls it while a fresh tab loads the page, which is how a disk busy
with other work looks to a browser, only longer. Each way is timed with the disk free and with it frozen: a
persistent profile on that file system (what the browser tests used before); the same with only its HTTP cache in
memory (``/dev/shm``), to tell which of the profile's files a load waits on; and ``chromium_context``'s in-memory
context, with Chromium's own temporary folder on the frozen file system. Root only. The file system is thawed,
unmounted and removed on every exit. Results: ``bench/results/browser-disk-stall.md``. Start it under the cluster
lock.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from importlib.metadata import version
from pathlib import Path

from playwright.sync_api import BrowserContext, Playwright, sync_playwright
from playwright.sync_api import Error as PlaywrightError

from bench.harness.chromium import CHROMIUM_ARGS, chromium_context, chromium_path
from bench.harness.cluster_options import ClusterOptions
from bench.harness.launched_cluster import LaunchedCluster
from bench.harness.page_ready import ready_after, ready_row
from bench.report import load_averages, machine_summary, markdown_table, publish

PROG = "python -m bench.browser_disk_stall"
FS_MIB = 256
"""Size of the file system made for Chromium's files."""
MEMORY = "/dev/shm"
"""A file system in memory (tmpfs), for the HTTP cache of the third way."""


def run(*command: str) -> None:
    subprocess.run(command, check=True, capture_output=True, timeout=60)


@contextmanager
def loop_filesystem() -> Iterator[Path]:
    """A fresh ext4 file system on a loop device, mounted; unmounted and removed on exit."""
    with tempfile.TemporaryDirectory(prefix="disk-stall-") as folder:
        image, mount = Path(folder) / "fs.img", Path(folder) / "mnt"
        mount.mkdir()
        with image.open("wb") as file:
            file.truncate(FS_MIB * 1024 * 1024)
        run("mkfs.ext4", "-q", str(image))
        run("mount", "-o", "loop", str(image), str(mount))
        try:
            yield mount
        finally:
            subprocess.run(["fsfreeze", "-u", str(mount)], capture_output=True, timeout=60)  # thawed if frozen
            run("umount", str(mount))


@contextmanager
def frozen(mount: Path) -> Iterator[None]:
    """The file system at ``mount`` stalled (every write waits) until the block ends."""
    run("fsfreeze", "-f", str(mount))
    try:
        yield
    finally:
        run("fsfreeze", "-u", str(mount))


def persistent_profile(mount: Path, cache_dir: Path | None = None
                       ) -> Callable[[Playwright], AbstractContextManager[BrowserContext]]:
    """A Chromium whose profile is a folder on ``mount``, with its HTTP cache there too or in ``cache_dir``."""
    cache = [f"--disk-cache-dir={cache_dir}"] if cache_dir is not None else []

    @contextmanager
    def open_context(playwright: Playwright) -> Iterator[BrowserContext]:
        context = playwright.chromium.launch_persistent_context(
            str(Path(tempfile.mkdtemp(prefix="profile-", dir=mount))), executable_path=chromium_path(),
            headless=True, args=[*CHROMIUM_ARGS, *cache])
        try:
            yield context
        finally:
            context.close()
    return open_context


def load_seconds(open_context: Callable[[Playwright], AbstractContextManager[BrowserContext]], url: str,
                 stall: AbstractContextManager[None], wait_s: float) -> float | None:
    """Seconds a fresh browser's first tab took to show the studio's controls during ``stall`` (None: not in
    ``wait_s``)."""
    with sync_playwright() as playwright, open_context(playwright) as context:
        page = context.new_page()
        page.goto("about:blank")
        with stall:
            try:
                page.goto(url, wait_until="commit", timeout=wait_s * 1000)
            except PlaywrightError:  # not even the page's first bytes arrived
                return None
            return ready_after(page, wait_s)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--loads", type=int, default=2, help="loads each way, disk free and frozen (default 2)")
    parser.add_argument("--wait", type=float, default=20.0, help="seconds a load may take (default 20)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("needs root (mount, fsfreeze)")
    loads = [os.getloadavg()]
    rows: list[list[str]] = []
    options = ClusterOptions(model="standin:0.2", nodes=1, start_timeout=120)
    with LaunchedCluster(options, name="bench-disk-stall") as cluster, loop_filesystem() as mount, \
            contextlib.ExitStack() as stack:
        os.environ["TMPDIR"] = str(mount)  # Playwright's driver puts the browser's own folder there
        url = cluster.public_url + "/"
        cache_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="disk-stall-cache-", dir=MEMORY)))
        ways = {"profile on disk": persistent_profile(mount),
                "profile on disk, HTTP cache in memory": persistent_profile(mount, cache_dir),
                "in-memory context": chromium_context}
        for way, open_context in ways.items():
            for disk, stall in (("free", nullcontext), ("frozen", lambda: frozen(mount))):
                for number in range(1, args.loads + 1):
                    seconds = load_seconds(open_context, url, stall(), args.wait)
                    rows.append(ready_row(f"{way}, disk {disk}, load {number}", seconds, args.wait))
                    print(rows[-1], flush=True)
        loads.append(os.getloadavg())
    publish("browser-disk-stall", [
        "# A studio tab's first load while the browser's disk stalls",
        f"`{PROG} --loads {args.loads} --wait {args.wait:g}`. {machine_summary()}. Headless Chromium (Playwright "
        f"{version('playwright')}), a fresh browser per load; a one-node stand-in cluster's public port. \"Frozen\": "
        "`fsfreeze` on the file system that holds Chromium's files, for the whole load.",
        markdown_table(["load", "controls", "seconds"], rows),
        "With its profile on a stalled disk, a fresh Chromium does not show the page's controls while the stall "
        "lasts. The HTTP cache is what the load waits on: with the same profile on the same frozen disk and only "
        "the cache in memory (`--disk-cache-dir` on tmpfs), the page loads as fast as with the disk free. An "
        "in-memory context keeps its cache in memory too. The browser tests use the in-memory "
        "context (`bench.harness.chromium.chromium_context`). Processes waiting on a frozen file system count in "
        "the load average: the load after the run says little of the machine's other work.",
        load_averages(loads),
    ])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
