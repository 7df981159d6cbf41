"""What a web front adds to a job: this tree's, side by side with another revision's.

    python -m bench.web_front                                  # this tree only, 1024², 30 jobs
    python -m bench.web_front --baseline e00da4c --sizes 512 1024 --requests 60

Each compared web front gets a worker of its own serving ``--model standin:SECONDS``
(``webui.worker.pipelines.standin``: **not a model**, a fixed sleep and a real PNG of the asked size):
this tree's, and with ``--baseline REV`` that revision's, from a temporary ``git worktree``.
One client, sequential jobs, every path interleaved so that drift on the machine hits all alike:
each web front over Gradio's queue protocol (join, event stream, result download, over one
keep-alive connection) and its worker over REST (``POST /generate``, no ``Prefer``), both reached
directly (no HAProxy). "Adds" is the web front's p50 minus its worker's. The load average is taken
before and after. Results go to ``bench/results/web-front.md``.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.cli import prepare_run
from bench.harness.browser_client import BrowserProtocolClient
from bench.harness.generation import Job
from bench.harness.processes import REPO, Processes, free_port
from bench.harness.rest_client import RestClient
from bench.harness.revisions import worktree
from bench.harness.waiting import wait_http
from bench.report import LatencyStats, fmt_ms, load_averages, machine_summary, markdown_table, write_results
from bench.tls import measure

PROMPT = "studio portrait, soft window light"


@dataclass(frozen=True)
class Front:
    """One compared web front (and its worker): a name and the tree their code comes from."""

    name: str
    tree: Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.web_front", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--requests", type=int, default=30, help="Sequential requests per path and size.")
    parser.add_argument("--standin", type=float, default=0.2, help="Seconds the stand-in sleeps per job.")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024], help="Image sides in pixels.")
    parser.add_argument("--baseline", metavar="REV", help="Also compare this git revision's worker and web front.")
    args = parser.parse_args(argv)
    if args.requests < 2 or args.standin < 0 or min(args.sizes) < 64:
        parser.error("--requests must be at least 2, --standin at least 0, --sizes at least 64")
    return args


def start_pair(processes: Processes, front: Front, node: str, standin: float) -> tuple[str, str]:
    """``front``'s stand-in worker and web front (node ``node``), from its tree; their URLs once ready."""
    worker_port, web_port = free_port(), free_port()
    processes.start(["python", "-m", "webui.worker", "--port", str(worker_port), "--node", node,
                     "--model", f"standin:{standin:g}"], log_name="bench-web-front-worker", cwd=front.tree)
    worker_url = f"http://127.0.0.1:{worker_port}"
    processes.start(["python", "-m", "webui.web", "--port", str(web_port), "--node", node,
                     "--worker-queue", worker_url], log_name="bench-web-front-web",
                    cwd=front.tree)
    web_url = f"http://127.0.0.1:{web_port}"
    wait_http(worker_url + "/readyz", timeout=120)
    wait_http(web_url + "/readyz", timeout=120)
    return web_url, worker_url


def render(args: argparse.Namespace, fronts: list[Front], seconds: dict[int, dict[str, list[float]]],
           loads: list[tuple[float, ...]]) -> str:
    rows = []
    for size, paths in seconds.items():
        stats = {name: LatencyStats.from_seconds(values) for name, values in paths.items()}
        for front in fronts:
            web, worker = stats[f"{front.name} web"], stats[f"{front.name} worker"]
            rows.append([f"{size}²", front.name, fmt_ms(web.median_ms), fmt_ms(web.p99_ms), fmt_ms(worker.median_ms),
                         f"{web.median_ms - worker.median_ms:.1f}"])
    command = " ".join(["python -m bench.web_front", f"--requests {args.requests}", f"--standin {args.standin:g}",
                        "--sizes", *map(str, args.sizes),
                        *(["--baseline", args.baseline] if args.baseline else [])])
    return "\n\n".join([
        "# What a web front adds to a job (stand-in workers)",
        f"`{command}`: {args.requests} sequential jobs per path and size, interleaved, each web front with a "
        f"worker of its own serving `standin:{args.standin:g}` (**not a model**: a fixed sleep and a real PNG). "
        "A web front's path is Gradio's queue protocol (join, event stream, result download) over one keep-alive "
        "connection; its worker's is `POST /generate`; both reached directly, without HAProxy. \"Adds\" is the "
        "web front's p50 minus its worker's p50.",
        markdown_table(["size", "web front", "p50 ms", "p99 ms", "its worker p50 ms", "adds (p50) ms"], rows),
        f"{load_averages(loads)}. {machine_summary()}.",
    ])


def compare(args: argparse.Namespace, fronts: list[Front]
            ) -> tuple[dict[int, dict[str, list[float]]], list[tuple[float, ...]]]:
    """Every front's and its worker's seconds per size; the load averages before and after."""
    seconds: dict[int, dict[str, list[float]]] = {}
    with Processes("bench-web-front") as processes:
        calls: dict[str, Callable[[Job], object]] = {}
        clients: list[BrowserProtocolClient | RestClient] = []
        for index, front in enumerate(fronts, 1):
            web_url, worker_url = start_pair(processes, front, f"front{index}", args.standin)
            web, worker = BrowserProtocolClient(web_url, api_name="generate"), RestClient(worker_url)
            calls[f"{front.name} web"], calls[f"{front.name} worker"] = web.generate, worker.generate
            clients += [web, worker]
        loads = [os.getloadavg()]
        for size in args.sizes:
            seconds[size] = measure(calls, Job(PROMPT, 8, size, size, seed=1000, guidance=0.0), args.requests)
        loads.append(os.getloadavg())
        for client in clients:
            client.close()
    return seconds, loads


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    prepare_run()
    started = time.monotonic()
    fronts = [Front("this tree", REPO)]
    if args.baseline:
        with worktree(args.baseline, "python -m bench.web_front") as tree:
            fronts.insert(0, Front(f"baseline {args.baseline}", tree))
            seconds, loads = compare(args, fronts)
    else:
        seconds, loads = compare(args, fronts)
    report = render(args, fronts, seconds, loads)
    for path in write_results("web-front", report, None):
        print(path)
    print(report)
    print(f"measured in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
