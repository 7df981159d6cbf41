"""Bounded soak: minutes of mixed traffic with random worker kills; nothing lost, nothing leaks.

The command line (``python -m bench.soak``): its flags and the run; the package's docstring says what it checks.
"""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path

from bench.cli import benchmark_parser, parse_benchmark_args, prepare_run
from bench.harness.cluster_options import ClusterOptions
from bench.harness.launched_cluster import LaunchedCluster
from bench.harness.load import Clock, LoadRunner
from bench.harness.processes import Processes
from bench.report import write_results
from bench.soak.kills import Killer
from bench.soak.memory import RssSampler
from bench.soak.report import SoakReport, plot, render
from bench.soak.traffic import Traffic


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line flags (see the package docstring, ``bench.soak``)."""
    parser = benchmark_parser("python -m bench.soak", __doc__, steps=6, size=384)
    parser.add_argument("--seconds", type=float, default=180.0, help="Length of the traffic.")
    parser.add_argument("--kills", type=int, default=2, help="Worker SIGKILLs during the soak.")
    parser.add_argument("--kill-gap", type=float, default=40.0, help="Least seconds between two kills.")
    parser.add_argument("--browsers", type=int, default=2, help="Browser-protocol tabs.")
    parser.add_argument("--rest", type=int, default=2, help="REST clients.")
    parser.add_argument("--reopen-every", type=int, default=5, help="A tab reloads the page every N jobs.")
    parser.add_argument("--malformed", type=float, default=0.15, help="Share of malformed requests.")
    parser.add_argument("--pause", type=float, default=0.3, help="Longest think time between requests (s).")
    parser.add_argument("--seed", type=int, default=20261125, help="Seed of the soak's random choices.")
    parser.add_argument("--rss-interval", type=float, default=5.0, help="Seconds between RSS samples.")
    parser.add_argument("--warmup", type=float, default=45.0, help="Seconds after a process appears before judging.")
    parser.add_argument("--judge-span", type=float, default=60.0,
                        help="Least seconds of samples after warm-up for a process to be judged.")
    parser.add_argument("--rss-bound-pct", type=float, default=15.0, help="Largest RSS growth in percent.")
    parser.add_argument("--rss-bound-mb", type=float, default=150.0, help="Largest RSS growth in MB.")
    parser.add_argument("--no-write", action="store_true", help="Do not write bench/results/soak.*.")
    return parse_benchmark_args(parser, argv)


def run_soak(args: argparse.Namespace, processes: Processes | None = None, run_dir: Path | None = None) -> SoakReport:
    """Start a cluster, soak it, judge it; the report.

    ``processes`` and ``run_dir`` as for ``LaunchedCluster`` (a test passes its own).
    """
    options = ClusterOptions.from_args(args)
    with LaunchedCluster(options, name="soak", processes=processes, run_dir=run_dir) as cluster:
        clock = Clock()
        traffic = Traffic(cluster, clock, args)
        runner = LoadRunner(traffic.clients(), args.seconds)
        killer = Killer(cluster, clock, runner.stop, args)
        with RssSampler(cluster, clock, args.rss_interval) as sampler:
            kill_thread = threading.Thread(target=killer.run, name="killer", daemon=True)
            kill_thread.start()
            records = runner.run()
            kill_thread.join(timeout=90)
            try:
                cluster.wait_all_up(timeout=120)
                all_up = True
            except TimeoutError:
                all_up = False
            duration = clock.now()
        for close in traffic.closers:
            close()
        try:
            restarts = cluster.status()
        except Exception as exc:  # the status is informative only
            restarts = {"error": str(exc)}
    verdicts = sampler.verdicts(args.warmup, args.judge_span, args.rss_bound_pct, args.rss_bound_mb)
    return SoakReport(args, records, killer.kills, verdicts, sampler.samples, all_up, restarts, duration,
                      errors=killer.errors)


def main(argv: list[str] | None = None) -> int:
    """Run the soak, print and write its report; 0 when it passed."""
    args = parse_args(argv)
    prepare_run()
    report = run_soak(args)
    markdown = render(report)
    print(markdown)
    if not args.no_write:
        for path in write_results("soak", markdown, plot(report)):
            print(f"wrote {path}")
    return 0 if not report.problems() else 1


if __name__ == "__main__":
    sys.exit(main())
