"""What an idle cluster costs in CPU, at each dispatch-agent poll interval, side by side.

    python -m bench.idle_cluster                          # 10 ms (production) and 50 ms (the test suite), 30 s
    python -m bench.idle_cluster --intervals 0.01 0.05 0.1 --seconds 60

One two-node stand-in cluster (``launch.py``) per ``health.dispatch_agent_interval``, all up at the same time, so
that the machine's drift hits them alike. Nothing is sent to them: after ``--settle`` seconds, each process's CPU
time (``psutil``) is taken over the same ``--seconds``, and summed per kind of process. The suite's clusters poll
at 50 ms (``tests/suite_cluster.py``). Results: ``bench/results/idle-cluster.md``. Start it under the cluster lock.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from collections import Counter

import psutil

from bench.harness.cluster_options import ClusterOptions
from bench.harness.launched_cluster import LaunchedCluster
from bench.report import load_averages, machine_summary, markdown_table, publish

PROG = "python -m bench.idle_cluster"
KINDS = {"webui.worker": "workers", "webui.web": "web fronts", "haproxy": "HAProxy", "-m jobs": "jobs service",
         "launch.py": "launch.py (sidecar)"}
"""A piece of a process's command line -> the kind it is counted as (the first that matches)."""


def kind_of(process: psutil.Process) -> str:
    """The kind ``process`` is counted as (``KINDS``), or "other"."""
    line = " ".join(process.cmdline())
    return next((kind for piece, kind in KINDS.items() if piece in line), "other")


def cpu_seconds(process: psutil.Process) -> float:
    """CPU seconds ``process`` has used so far (user and system)."""
    times = process.cpu_times()
    return times.user + times.system


def measure(clusters: dict[float, LaunchedCluster], seconds: float) -> dict[float, Counter[str]]:
    """Each cluster's CPU seconds per kind of process over the same ``seconds``."""
    trees = {interval: cluster.process_tree() for interval, cluster in clusters.items()}
    before = {process.pid: cpu_seconds(process) for tree in trees.values() for process in tree}
    time.sleep(seconds)
    used: dict[float, Counter[str]] = {}
    for interval, tree in trees.items():
        used[interval] = Counter()
        for process in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                used[interval][kind_of(process)] += cpu_seconds(process) - before[process.pid]
    return used


def render(args: argparse.Namespace, used: dict[float, Counter[str]], loads: list[tuple[float, ...]]) -> str:
    kinds = [kind for kind in [*KINDS.values(), "other"] if any(counts[kind] for counts in used.values())]
    rows = [[f"{interval * 1000:g} ms", *(f"{counts[kind]:.2f}" for kind in kinds), f"{sum(counts.values()):.2f}",
             f"{100 * sum(counts.values()) / args.seconds:.1f}"] for interval, counts in used.items()]
    command = " ".join([PROG, "--intervals", *(f"{interval:g}" for interval in args.intervals),
                        "--seconds", f"{args.seconds:g}", "--settle", f"{args.settle:g}"])
    return "\n\n".join([
        "# What an idle cluster costs in CPU, per dispatch-agent poll interval",
        f"`{command}`: one two-node stand-in cluster per interval, all up at once and sent nothing; CPU seconds of "
        f"each kind of process over the same {args.seconds:g} s. {machine_summary()}.",
        markdown_table(["dispatch-agent poll", *kinds, "all", "% of a core"], rows),
        load_averages(loads),
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--intervals", type=float, nargs="+", default=[0.01, 0.05],
                        help="dispatch-agent poll intervals in seconds, one cluster each (default 0.01 0.05)")
    parser.add_argument("--seconds", type=float, default=30.0, help="seconds over which CPU is taken (default 30)")
    parser.add_argument("--settle", type=float, default=10.0, help="seconds to wait once all are up (default 10)")
    args = parser.parse_args(argv)
    if min(args.intervals) <= 0 or args.seconds <= 0 or args.settle < 0:
        parser.error("--intervals and --seconds must be positive, --settle at least 0")
    with contextlib.ExitStack() as stack:
        clusters = {interval: stack.enter_context(LaunchedCluster(
            ClusterOptions(model="standin:0.2", nodes=2, start_timeout=120, dispatch_agent_interval=interval),
            name=f"bench-idle-{interval:g}")) for interval in args.intervals}
        for cluster in clusters.values():
            cluster.wait_all_ready(timeout=120)
        time.sleep(args.settle)
        loads = [os.getloadavg()]
        used = measure(clusters, args.seconds)
        loads.append(os.getloadavg())
    publish("idle-cluster", [render(args, used, loads)])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
