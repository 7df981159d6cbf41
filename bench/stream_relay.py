"""What the stream relay costs a ``gradio_client`` call: its join and event stream through the jobs service
(``jobs.relay``, the cluster's default) against straight to the web front (``jobs.relay: false``), in the same run.

    python -m bench.stream_relay                  # 100 rounds, stand-in 0.2 s, 2 nodes each
    python -m bench.stream_relay --rounds 200

Two stand-in clusters (``launch.py``, web fronts running their calls as jobs), one with the relay and one without,
up at the same time. Two reused ``gradio_client`` clients, one per cluster, call ``/generate`` one at a time, in
turn: the load is one call in flight; the load average is recorded. Results: ``bench/results/stream-relay.md``.
Start it under the cluster lock.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from bench.harness.cluster_options import ClusterOptions
from bench.harness.generation import Job
from bench.harness.gradio_api_client import GradioApiClient
from bench.harness.launched_cluster import LaunchedCluster
from bench.report import LatencyStats, load_averages, machine_summary, markdown_table, publish

PROG = "python -m bench.stream_relay"
NOTES = ("A relayed call is two more hops through the jobs service: its join (the relay records the call for its "
         "session) and its event stream (each message parsed, for the calls still in flight). The result's "
         "download goes to the web front either way.")


def timed(client: GradioApiClient, job: Job) -> float:
    began = time.perf_counter()
    client.generate(job)
    return time.perf_counter() - began


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=100, help="calls per path (default 100)")
    parser.add_argument("--latency", type=float, default=0.2, help="the stand-in's seconds per job (default 0.2)")
    args = parser.parse_args(argv)
    loads = [os.getloadavg()]
    def options(relay: bool) -> ClusterOptions:
        return ClusterOptions(model=f"standin:{args.latency:g}", nodes=2, start_timeout=120,
                              extra={"jobs": {"web_fronts": True, "relay": relay}})

    with LaunchedCluster(options(True), name="bench-relay-on") as relayed, \
            LaunchedCluster(options(False), name="bench-relay-off") as straight, \
            tempfile.TemporaryDirectory(prefix="stream-relay-") as folder:
        relayed.wait_jobs_ready()
        straight.wait_jobs_ready()
        clients = {"through the relay (the default)": GradioApiClient(relayed.public_url + "/", Path(folder) / "on"),
                   "straight to the web front": GradioApiClient(straight.public_url + "/", Path(folder) / "off")}
        try:
            for client in clients.values():  # warm-up: connections, the fronts' first calls
                for seed in range(5):
                    timed(client, Job(prompt="warm-up", width=64, height=64, steps=2, seed=seed))
            times: dict[str, list[float]] = {name: [] for name in clients}
            for n in range(args.rounds):
                for name, client in clients.items():
                    times[name].append(timed(client, Job(prompt="a studio portrait", width=64, height=64, steps=2,
                                                         seed=1000 + n)))
        finally:
            for client in clients.values():
                client.close()
        loads.append(os.getloadavg())
    stats = {name: LatencyStats.from_seconds(values) for name, values in times.items()}
    base = stats["straight to the web front"]
    rows = [[name, str(value.count), f"{value.median_ms:.1f}", f"{value.p95_ms:.1f}", f"{value.max_ms:.1f}",
             "" if value is base else f"{value.median_ms - base.median_ms:+.1f}"] for name, value in stats.items()]
    publish("stream-relay", [
        "# The stream relay: what it costs a gradio_client call",
        f"`{PROG} --rounds {args.rounds} --latency {args.latency:g}`. {machine_summary()}.",
        f"## gradio_client `/generate`, one call in flight (ms; stand-in {args.latency * 1000:.0f} ms a job, 64x64)",
        markdown_table(["path", "calls", "p50", "p95", "max", "p50 added"], rows),
        NOTES,
        load_averages(loads),
    ])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
