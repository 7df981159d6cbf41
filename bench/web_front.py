"""What the web front's file chunk size changes in a job through Gradio's queue protocol.

    python -m bench.web_front                          # 30 requests per path, 1024², 64 KiB vs 1 MiB
    python -m bench.web_front --sizes 512 1024 --chunks 65536 262144 1048576

One node serving ``--model standin:SECONDS`` (``webui.worker.standin``: **not a model**, a fixed
sleep and a real PNG of the asked size) behind HAProxy, plus one extra web front per
``--chunks`` value (``python -m webui.web --file-chunk-bytes N``), each sending its jobs to the
same worker queue. One client, sequential jobs, every path interleaved so that drift on the
machine hits all alike: REST through HAProxy (the reference), and each extra web front over
Gradio's queue protocol (join, event stream, result download over one keep-alive connection),
reached directly. "Adds" is a front's p50 minus the reference's p50: the web front's share with
that chunk size. The load average is taken before and after. Results go to
``bench/results/web-front.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from collections.abc import Callable

from bench.cli import prepare_run
from bench.harness.clients import BrowserProtocolClient, Job, RestClient
from bench.harness.cluster import ClusterOptions, LaunchedCluster
from bench.harness.processes import Processes, free_port
from bench.harness.waiting import wait_http
from bench.report import LatencyStats, fmt_ms, load_averages, machine_summary, markdown_table, write_results
from bench.tls import measure

PROMPT = "studio portrait, soft window light"
REFERENCE = "HAProxy REST"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.web_front", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--requests", type=int, default=30, help="Sequential requests per path and size.")
    parser.add_argument("--standin", type=float, default=0.2, help="Seconds the stand-in sleeps per job.")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024], help="Image sides in pixels.")
    parser.add_argument("--chunks", type=int, nargs="+", default=[64 * 1024, 1024 * 1024],
                        help="--file-chunk-bytes of each extra web front (64 KiB is starlette's own).")
    args = parser.parse_args(argv)
    if args.requests < 2 or args.standin < 0 or min(args.sizes) < 64 or min(args.chunks) < 4096:
        parser.error("--requests must be at least 2, --standin at least 0, --sizes at least 64, --chunks at least 4096")
    return args


def front_name(chunk: int) -> str:
    return f"web front, {chunk // 1024} KiB chunks"


def start_fronts(processes: Processes, cluster: LaunchedCluster, chunks: list[int]) -> dict[int, str]:
    """One web front per chunk size on the cluster's worker queue; chunk size -> its URL, once ready."""
    urls = {}
    for chunk in chunks:
        port = free_port()
        processes.start(["python", "-m", "webui.web", "--port", str(port), "--node", f"chunk{chunk}",
                         "--worker-queue", cluster.spec.worker_queue.url, "--file-chunk-bytes", str(chunk)],
                        log_name=f"bench-web-front-{chunk}")
        urls[chunk] = f"http://127.0.0.1:{port}"
    for url in urls.values():
        wait_http(url + "/readyz", timeout=120)
    return urls


def render(args: argparse.Namespace, seconds: dict[int, dict[str, list[float]]], loads: list[tuple[float, ...]]) -> str:
    rows = []
    for size, paths in seconds.items():
        stats = {name: LatencyStats.from_seconds(values) for name, values in paths.items()}
        reference = stats[REFERENCE]
        for name, s in stats.items():
            adds = "–" if name == REFERENCE else f"{s.median_ms - reference.median_ms:.1f}"
            rows.append([f"{size}²", name, fmt_ms(s.median_ms), fmt_ms(s.p99_ms), adds])
    return "\n\n".join([
        "# The web front's file chunk size (`--file-chunk-bytes`), stand-in worker",
        f"`python -m bench.web_front --requests {args.requests} --standin {args.standin} --sizes "
        f"{' '.join(map(str, args.sizes))} --chunks {' '.join(map(str, args.chunks))}`: {args.requests} "
        f"sequential requests per path and size, interleaved, from `standin:{args.standin}` (**not a model**: a "
        "fixed sleep and a real PNG). The reference is REST through HAProxy; each web front is reached directly "
        "and speaks Gradio's queue protocol (join, event stream, result download) over one keep-alive connection. "
        "\"Adds\" is the path's p50 minus the reference's p50, i.e. the web front's share.",
        markdown_table(["size", "path", "p50 ms", "p99 ms", "adds (p50) ms"], rows),
        f"{load_averages(loads)}. {machine_summary()}.",
    ])


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    prepare_run()
    options = dataclasses.replace(ClusterOptions(), model=f"standin:{args.standin:g}", nodes=1)
    seconds: dict[int, dict[str, list[float]]] = {}
    with Processes("bench-web-front") as processes, \
            LaunchedCluster(options, name="web-front", processes=processes) as cluster:
        urls = start_fronts(processes, cluster, args.chunks)
        rest = RestClient(cluster.public_url)
        fronts = {chunk: BrowserProtocolClient(url, api_name="generate") for chunk, url in urls.items()}
        calls: dict[str, Callable[[Job], object]] = {
            REFERENCE: rest.generate, **{front_name(chunk): client.generate for chunk, client in fronts.items()}}
        loads = [os.getloadavg()]
        started = time.monotonic()
        for size in args.sizes:
            job = Job(PROMPT, 8, size, size, seed=1000, guidance=0.0)
            seconds[size] = measure(calls, job, args.requests)
        loads.append(os.getloadavg())
        for client in (rest, *fronts.values()):
            client.close()
    report = render(args, seconds, loads)
    for path in write_results("web-front", report, None):
        print(path)
    print(report)
    print(f"measured in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
