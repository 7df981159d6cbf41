"""Failover benchmark: a bounded load while a worker dies, a worker hangs, a web front dies, an OOM,
and then an operator's rolling restart restarts every node.

The command line (``python -m bench.failover``): its flags, the clients, and the run.
"""

from __future__ import annotations

import argparse
import threading
from collections.abc import Callable

import psutil

from bench.cli import benchmark_parser, parse_benchmark_args, prepare_run
from bench.failover.failures import OOM_MARKER, FailureScript
from bench.failover.monitor import StateMonitor
from bench.failover.report import plot, render
from bench.harness.browser_client import BrowserProtocolClient
from bench.harness.cluster_options import ClusterOptions
from bench.harness.generation import CallFailed, Job
from bench.harness.gradio_api_client import GradioApiClient
from bench.harness.launched_cluster import LaunchedCluster
from bench.harness.load import Clock, LoadClient, LoadRunner, Record, timed_call
from bench.harness.rest_client import RestClient
from bench.report import (
    write_results,
)
from webui.contract import FAULT_OOM_AT_STEP, FAULT_PROMPT_MARKER

PROMPT = "studio portrait, rim light, charcoal background"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line flags (see the module docstring)."""
    parser = benchmark_parser("python -m bench.failover", __doc__, steps=8, size=512)
    parser.add_argument("--clients", type=int, default=4,
                        help="Concurrent clients: 1 gradio_client, 1 browser-protocol, the rest REST.")
    parser.add_argument("--seconds", type=float, default=480.0, help="Longest run in seconds.")
    parser.add_argument("--think-time", type=float, default=10.0,
                        help="Seconds the gradio_client and browser clients wait between two jobs (a person looking at "
                        "the result; a drained web front needs its sticky clients idle at once to switch).")
    parser.add_argument("--max-requests", type=int, default=300, help="Most requests per client.")
    parser.add_argument("--settle", type=float, default=6.0,
                        help="Seconds of normal load before the first failure and after each recovery.")
    parser.add_argument("--standby", action="store_true",
                        help="Give every worker a warm standby (standby: true), loaded before each failure.")
    parser.add_argument("--recovery-timeout", type=float, default=120.0,
                        help="Longest wait for a node to come back before giving up on the rest.")
    return parse_benchmark_args(parser, argv)


def build_clients(cluster: LaunchedCluster, clock: Clock, job: Job, count: int, max_requests: int,
                  closers: list[Callable[[], None]], think_time: float = 0.0) -> list[LoadClient]:
    """The load: one reused gradio_client, one browser-protocol tab (each pausing ``think_time`` s
    between jobs), the rest REST (no pause)."""
    def numbered(index: int, i: int) -> Job:
        return Job(job.prompt, job.steps, job.width, job.height, job.seed + 10_000 * index + i, job.guidance)

    clients = []
    for index in range(count):
        if index == 0:
            kind, client = "gradio_client", GradioApiClient(cluster.public_url + "/")
        elif index == 1:
            kind, client = "browser", BrowserProtocolClient(cluster.public_url)
        else:
            kind, client = "rest", RestClient(cluster.public_url)
        closers.append(client.close)

        def call(i: int, index: int = index, kind: str = kind, client=client) -> Record:
            return timed_call(clock, f"{kind}-{index}", kind, True, lambda: client.generate(numbered(index, i)))

        pause = think_time if kind != "rest" else 0.0
        clients.append(LoadClient(f"{kind}-{index}", call, max_requests=max_requests, pause=pause))
    return clients


def standby_memory(cluster: LaunchedCluster, timeout: float) -> str:
    """Once every standby is loaded: the resident memory of each standby and of each worker, in words."""
    standbys = cluster.wait_standbys(timeout)
    mib = 2**20
    parts = [f"{node}: standby {psutil.Process(entry['pid']).memory_info().rss / mib:.0f} MiB RSS, worker "
             f"{psutil.Process(cluster.pid(node, 'worker')).memory_info().rss / mib:.0f} MiB"
             for node, entry in standbys.items()]
    return "Warm standby per worker (loaded, waiting): " + "; ".join(parts) + "."


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark, print the table, write the results files."""
    args = parse_args(argv)
    if args.clients < 3:
        raise SystemExit("--clients: at least 3 (gradio_client, browser, REST)")
    prepare_run()
    options = ClusterOptions.from_args(args)
    # Every worker gets the fault switch, armed only by the marker prompt that only the
    # trigger job carries; one OOM makes a worker exit with EXIT_OOM.
    options.worker_env = {FAULT_OOM_AT_STEP: "2", FAULT_PROMPT_MARKER: OOM_MARKER}
    options.worker_args = ["--max-consecutive-ooms", "1"]
    options.standby = args.standby
    job = Job(PROMPT, args.steps, args.size, args.size, seed=1)
    closers: list[Callable[[], None]] = []
    with LaunchedCluster(options, name="failover") as cluster:
        memory = standby_memory(cluster, args.start_timeout) if args.standby else ""
        clock = Clock()
        runner = LoadRunner(build_clients(cluster, clock, job, args.clients, args.max_requests, closers,
                                          args.think_time), args.seconds)
        with StateMonitor(cluster, clock) as monitor:
            script = FailureScript(cluster, monitor, clock, runner, job, args)
            thread = threading.Thread(target=script.run, name="failures", daemon=True)
            thread.start()
            records = runner.run()
            thread.join(timeout=args.recovery_timeout)
            duration = clock.now()
        for close in closers:
            try:
                close()
            except CallFailed:
                pass
    if script.error is not None:
        raise script.error
    markdown = render(args, records, script.failures, duration, memory)
    print(markdown)
    name = "failover-standby" if args.standby else "failover"
    for path in write_results(name, markdown, plot(records, script.failures, monitor.samples, duration)):
        print(f"wrote {path}")
