"""What a hostile burst leaves on a node: web front memory, cache disk and inodes, log bytes.

    python -m bench.edge_memory                                   # this tree, the burst of issue 18
    python -m bench.edge_memory --uploads 5 --files 50 --ids 50 --long-uris 50 --baseline main

A one-node cluster (``launch.py``, the fixed-latency stand-in worker: **not a model**) is measured
before a burst, right after it and ``--settle`` seconds later (the cache janitor sweeps every 2 s,
the sidecar looks at its logs every few seconds). The burst, all through HAProxy's public port:
``--uploads`` uploads of ``--files`` distinct 16-byte files each; ``--ids`` requests with unique long
``upload_id`` (``upload_progress``) and ``session_hash`` (``queue/data``) values; ``--long-uris``
requests for ``--uri-length``-character paths with a query string. With ``--baseline REV`` the same runs
first against that revision's tree (a temporary ``git worktree``). Results: ``bench/results/edge-memory.md``.
"""

from __future__ import annotations

import argparse
import os
import secrets
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

from bench.cli import prepare_run
from bench.harness.cluster_options import ClusterOptions
from bench.harness.launched_cluster import LaunchedCluster
from bench.harness.processes import REPO
from bench.harness.revisions import worktree
from bench.report import machine_summary, markdown_table, write_results
from webui.web.cache_janitor import scan_cache

PROG = "python -m bench.edge_memory"
MB = 1024 * 1024


@dataclass(frozen=True)
class Reading:
    """One look at the node: what the burst is meant to grow."""

    phase: str
    web_rss: int
    cache_bytes: int
    cache_inodes: int
    log_bytes: int
    load: float


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--uploads", type=int, default=100, help="Upload requests in the burst.")
    parser.add_argument("--files", type=int, default=1000, help="Tiny files per upload request.")
    parser.add_argument("--ids", type=int, default=1000, help="Requests with a unique long upload_id/session_hash.")
    parser.add_argument("--long-uris", type=int, default=1000, help="Requests for a long path with a query string.")
    parser.add_argument("--uri-length", type=int, default=4000, help="Characters of each long path and id.")
    parser.add_argument("--settle", type=float, default=15.0, help="Seconds between the burst and the last look.")
    parser.add_argument("--clients", type=int, default=8, help="Concurrent clients of the burst.")
    parser.add_argument("--baseline", metavar="REV", help="Run the same against this git revision's tree first.")
    args = parser.parse_args(argv)
    if min(args.uploads, args.files, args.ids, args.long_uris, args.clients) < 1 or args.uri_length < 16:
        parser.error("counts must be at least 1, --uri-length at least 16")
    return args


def look(cluster: LaunchedCluster, phase: str) -> Reading:
    """The web front's RSS, its Gradio cache's disk use and inodes, and every log's bytes, now."""
    cache = scan_cache(cluster.run_dir / "gradio" / "node1")
    logs = [*(cluster.run_dir / "logs").iterdir(), *cluster.run_dir.glob("haproxy.log*")]
    return Reading(phase, psutil.Process(cluster.pid("node1", "web")).memory_info().rss, cache.disk_bytes,
                   cache.inodes, sum(path.stat().st_size for path in logs if path.is_file()), os.getloadavg()[0])


def answer(call: Callable[[], httpx.Response]) -> str:
    """What one burst request got: its status, or the kind of failure."""
    try:
        return str(call().status_code)
    except httpx.TimeoutException:
        return "timeout"
    except httpx.HTTPError as exc:
        return type(exc).__name__


def burst(args: argparse.Namespace, url: str) -> dict[str, Counter[str]]:
    """The hostile requests, ``--clients`` at a time; how each kind was answered."""
    tail = "x" * args.uri_length

    def upload(client: httpx.Client) -> httpx.Response:
        files = [("files", (f"t{index}.txt", secrets.token_bytes(16), "text/plain")) for index in range(args.files)]
        return client.post("/gradio_api/upload", files=files)

    def unique_id(client: httpx.Client, index: int) -> httpx.Response:
        value = f"{secrets.token_hex(8)}{tail}"
        if index % 2:
            return client.get("/gradio_api/upload_progress", params={"upload_id": value})
        return client.get("/gradio_api/queue/data", params={"session_hash": value})

    def long_uri(client: httpx.Client) -> httpx.Response:
        return client.get(f"/gradio_api/{tail}", params={"session_hash": secrets.token_hex(16)})

    kinds: dict[str, list[Callable[[httpx.Client], httpx.Response]]] = {
        "uploads": [upload] * args.uploads,
        "unique ids": [lambda client, index=index: unique_id(client, index) for index in range(args.ids)],
        "long URIs": [long_uri] * args.long_uris,
    }
    answers: dict[str, Counter[str]] = {}
    with httpx.Client(base_url=url, timeout=httpx.Timeout(30.0, read=2.0),
                      limits=httpx.Limits(max_connections=args.clients)) as client:
        with ThreadPoolExecutor(args.clients) as pool:
            for kind, calls in kinds.items():
                answers[kind] = Counter(pool.map(lambda call: answer(lambda: call(client)), calls))
    return answers


def run(args: argparse.Namespace, tree: Path) -> tuple[list[Reading], dict[str, Counter[str]]]:
    """One cluster from ``tree``: readings before, right after and ``--settle`` s after the burst."""
    options = ClusterOptions(model="standin:0.3", nodes=1, dispatch_agent=False,
                             web_args=["--cache-sweep-interval", "2"])
    with LaunchedCluster(options, name="edge-memory", tree=tree) as cluster:
        readings = [look(cluster, "before")]
        answers = burst(args, cluster.public_url)
        readings.append(look(cluster, "after the burst"))
        time.sleep(args.settle)
        readings.append(look(cluster, f"{args.settle:g} s later"))
    return readings, answers


def render(args: argparse.Namespace, runs: dict[str, tuple[list[Reading], dict[str, Counter[str]]]]) -> str:
    rows = [[tree, r.phase, f"{r.web_rss / MB:.0f}", f"{r.cache_bytes / MB:.1f}", r.cache_inodes,
             f"{r.log_bytes / MB:.2f}", f"{r.load:.2f}"] for tree, (readings, _) in runs.items() for r in readings]
    answered = [f"- {tree}, {kind}: " + ", ".join(f"{count} × {status}" for status, count in sorted(counts.items()))
                for tree, (_, answers) in runs.items() for kind, counts in answers.items()]
    command = " ".join([PROG, f"--uploads {args.uploads} --files {args.files} --ids {args.ids}",
                        f"--long-uris {args.long_uris} --uri-length {args.uri_length} --settle {args.settle:g}",
                        f"--clients {args.clients}", *(["--baseline", args.baseline] if args.baseline else [])])
    return "\n\n".join([
        "# What a hostile burst leaves on a node",
        f"`{command}`: one node (stand-in worker, **not a model**), every request through HAProxy's public port. "
        "Cache: the web front's Gradio folder, bytes on disk (allocated blocks) and inodes (files and folders). "
        "Logs: every file in the run directory's `logs/` and `haproxy.log*`.",
        markdown_table(["tree", "when", "web front RSS MB", "cache MB on disk", "cache inodes", "logs MB",
                        "load (1 min)"], rows),
        "Answers to the burst:\n\n" + "\n".join(answered),
        f"{machine_summary()}.",
    ])


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    prepare_run()
    started = time.monotonic()
    runs = {}
    if args.baseline:
        with worktree(args.baseline, PROG) as tree:
            runs[f"baseline {args.baseline}"] = run(args, tree)
    runs["this tree"] = run(args, REPO)
    report = render(args, runs)
    for path in write_results("edge-memory", report, None):
        print(path)
    print(report)
    print(f"measured in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
