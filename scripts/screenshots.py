"""Retake the README's screenshots of the studio page: ``python -m scripts.screenshots`` from the repository root.

Starts a whole cluster on the offline demo model (``launch.py`` on free loopback ports, its run dir in a temporary
dir: ``bench.harness.launched_cluster.LaunchedCluster``), generates one portrait in headless Chromium at 1440×900 (a
preset and a Subject) and one at 390×844 (a typed prompt), saves what each window shows as
``docs/images/studio-desktop.png`` and ``studio-phone.png`` (reduced to 64 colours and optimized: they are in the
README's first screen), and stops every process it started, by PID. It starts a cluster: on a shared machine run it
under the cluster lock (``flock /tmp/ph-cluster.lock python -m scripts.screenshots``).
"""

from __future__ import annotations

import argparse
import logging
import re
from pathlib import Path

from PIL import Image
from playwright.sync_api import Browser, expect, sync_playwright

from bench.harness.chromium import launch_chromium_browser
from bench.harness.cluster_options import ClusterOptions
from bench.harness.launched_cluster import LaunchedCluster
from bench.harness.processes import REPO
from tests.browser import StudioPage

logger = logging.getLogger(__name__)

DESKTOP = {"width": 1440, "height": 900}
PHONE = {"width": 390, "height": 844}
PRESET, SUBJECT = "Social avatar", "a cellist with silver hair"
PHONE_PROMPT = "a violinist in warm rim light, dark background"
JOB_MS = 300_000
"""Longest one generation may take on the demo model on a busy CPU."""


def optimize(path: Path, colours: int = 64) -> int:
    """Reduce the PNG at ``path`` to ``colours`` colours and recompress it; its new size in bytes."""
    with Image.open(path) as image:
        reduced = image.convert("RGB").quantize(colors=colours, method=Image.Quantize.MEDIANCUT, dither=Image.NONE)
    reduced.save(path, optimize=True)
    return path.stat().st_size


def take(browser: Browser, url: str, viewport: dict[str, int], name: str, out: Path) -> Path:
    """One generation in a fresh window of ``viewport``'s size, then what the window shows, from the top."""
    context = browser.new_context(viewport=viewport, device_scale_factor=1)
    try:
        studio = StudioPage(context.new_page(), url, name).open()
        if viewport is DESKTOP:
            studio.component("subject").locator("input, textarea").first.press_sequentially(SUBJECT)
            studio.choose("preset", PRESET)
            expect(studio.component("prompt").locator("textarea")).to_have_value(re.compile(re.escape(SUBJECT)))
        else:
            studio.type_prompt(PHONE_PROMPT)
        studio.set_slider("num-images", 1)
        summary = studio.run_job(JOB_MS)
        studio.gallery_image_sizes()  # every image loaded
        expect(studio.component("model-note")).to_contain_text("demo")
        studio.page.evaluate("() => window.scrollTo(0, 0)")
        path = out / f"studio-{name}.png"
        studio.page.screenshot(path=str(path))
        logger.info("%s: seed %d, %d×%d: %s", name, summary.seed, summary.width, summary.height, path)
        return path
    finally:
        context.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images", help="Where the PNGs go.")
    parser.add_argument("--model", default="demo", help="The workers' model (default: the offline demo model).")
    parser.add_argument("--threads", type=int, default=0, help="torch threads per worker (0: torch's default).")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    options = ClusterOptions(model=args.model, nodes=1, threads=args.threads)
    with LaunchedCluster(options, name="screenshots") as cluster:  # its run dir: a temporary dir
        cluster.wait_all_ready()
        with sync_playwright() as playwright:
            browser = launch_chromium_browser(playwright)
            try:
                for viewport, name in ((DESKTOP, "desktop"), (PHONE, "phone")):
                    path = take(browser, cluster.public_url + "/", viewport, name, args.out)
                    logger.info("%s: %d bytes after optimizing", path, optimize(path))
            finally:
                browser.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
