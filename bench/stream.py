"""How soon a streamed job's first line reaches the client: straight to the worker, and through HAProxy
with and without ``option http-no-delay``.

    python -m bench.stream                     # 20 streams per path, stand-in sleeping 0.5 s over 8 steps
    python -m bench.stream --requests 40 --standin 0.8

One worker serving ``--model standin:SECONDS`` (``webui.worker.pipelines.standin``: **not a model**, a fixed sleep
reported as 8 steps and a real PNG) and two HAProxy instances in front of it, rendered from the same
cluster description: one as ``balancer.haproxy.config`` renders it (``option http-no-delay``), one with
that line taken out (HAProxy's default: small chunks are coalesced with ``MSG_MORE``). One client sends
``POST /generate/stream`` (NDJSON: a progress line per step, then the result) along the three paths in
turn and times the first line and the whole stream. The load average is taken before and after.
Results go to ``bench/results/stream.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time
from pathlib import Path

import httpx

from balancer.haproxy.config import WORKERS_BACKEND, render_config
from bench.cli import prepare_run
from bench.harness.balancer import running_haproxy, wait_servers_up
from bench.harness.processes import Processes, free_port
from bench.report import LatencyStats, fmt_ms, load_averages, machine_summary, markdown_table, write_results
from bench.tls import balancer_spec

NO_DELAY = "    option http-no-delay\n"
PATHS = ("worker", "haproxy", "haproxy without http-no-delay")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.stream", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--requests", type=int, default=20, help="Sequential streams per path.")
    parser.add_argument("--standin", type=float, default=0.5, help="Seconds the stand-in sleeps per job.")
    args = parser.parse_args(argv)
    if args.requests < 2 or args.standin < 0:
        parser.error("--requests must be at least 2, --standin at least 0")
    return args


def start_haproxy(stack: contextlib.ExitStack, root: Path, name: str, worker_port: int, no_delay: bool) -> str:
    """An HAProxy in front of the worker (``option http-no-delay`` taken out unless ``no_delay``), stopped with
    ``stack``; its URL once it sees the worker UP."""
    spec = balancer_spec(root / name.replace(" ", "-"), worker_port, None)
    if NO_DELAY not in render_config(spec):
        raise RuntimeError("the rendered haproxy.cfg has no 'option http-no-delay' line to compare against")
    stack.enter_context(running_haproxy(spec, root / f"{name.replace(' ', '-')}-haproxy.log",
                                        edit=None if no_delay else lambda config: config.replace(NO_DELAY, "")))
    wait_servers_up(spec, [(WORKERS_BACKEND, "node")])
    return spec.public.url


def stream_once(client: httpx.Client, url: str) -> tuple[float, float]:
    """Seconds to the first NDJSON line and to the end of one ``POST /generate/stream``."""
    started = time.perf_counter()
    first = None
    job = {"prompt": "stream bench", "width": 256, "height": 256, "steps": 8, "seed": 3}
    with client.stream("POST", f"{url}/generate/stream", json=job) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if first is None and line:
                first = time.perf_counter() - started
    if first is None:
        raise RuntimeError(f"{url}: an empty stream")
    return first, time.perf_counter() - started


def measure(urls: dict[str, str], requests: int) -> dict[str, tuple[list[float], list[float]]]:
    """(first-line seconds, whole-stream seconds) per path, interleaved, after one warm-up each."""
    samples: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in urls}
    with httpx.Client(timeout=120) as client:
        for url in urls.values():
            stream_once(client, url)
        for _ in range(requests):
            for name, url in urls.items():
                first, whole = stream_once(client, url)
                samples[name][0].append(first)
                samples[name][1].append(whole)
    return samples


def render(args: argparse.Namespace, samples: dict[str, tuple[list[float], list[float]]],
           loads: list[tuple[float, ...]]) -> str:
    rows = []
    for name, (first, whole) in samples.items():
        first_stats, whole_stats = LatencyStats.from_seconds(first), LatencyStats.from_seconds(whole)
        rows.append([name, fmt_ms(first_stats.median_ms), fmt_ms(first_stats.p95_ms), fmt_ms(whole_stats.median_ms),
                     fmt_ms(whole_stats.p95_ms)])
    return "\n\n".join([
        "# Streamed progress: time to the first line, with and without `option http-no-delay`",
        f"`python -m bench.stream --requests {args.requests} --standin {args.standin}`: one worker serving "
        f"`standin:{args.standin}` (**not a model**: a fixed sleep over 8 reported steps, 256² PNG), two HAProxy "
        "instances in front of it rendered from the same cluster description, one with the line taken out; "
        f"{args.requests} sequential `POST /generate/stream` per path, interleaved.",
        markdown_table(["path", "first line p50 ms", "first line p95 ms", "whole stream p50 ms",
                        "whole stream p95 ms"], rows),
        f"{load_averages(loads)}. {machine_summary()}.",
    ])


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    prepare_run()
    with tempfile.TemporaryDirectory(prefix="bench-stream-") as tmp, Processes("bench-stream") as processes:
        root = Path(tmp)
        port = free_port()
        worker = processes.start(["python", "-m", "webui.worker", "--port", str(port), "--node", "node",
                                  "--model", f"standin:{args.standin}"], log_name="bench-stream-worker")
        with contextlib.ExitStack() as stack:
            urls = {PATHS[0]: f"http://127.0.0.1:{port}"}
            for name, no_delay in ((PATHS[1], True), (PATHS[2], False)):
                urls[name] = start_haproxy(stack, root, name, port, no_delay)
            if worker.poll() is not None:
                raise RuntimeError("the stand-in worker exited")
            loads = [os.getloadavg()]
            samples = measure(urls, args.requests)
            loads.append(os.getloadavg())
    report = render(args, samples, loads)
    for path in write_results("stream", report, None):
        print(path)
    print(report)


if __name__ == "__main__":
    main()
