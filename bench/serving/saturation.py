"""GPU duty cycle and 1 vs 2 workers' jobs/s under saturating load, without and with the dispatch agent."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import operator
import os
import threading
import time
from dataclasses import dataclass
from functools import reduce

import httpx

from bench.harness.cluster_options import ClusterOptions
from bench.harness.generation import Job
from bench.harness.launched_cluster import LaunchedCluster
from bench.report import (
    load_averages,
    machine_summary,
    markdown_table,
)
from bench.serving.measure import PROMPT, Throughput, rest_throughput

logger = logging.getLogger(__name__)


SATURATION_VARIANTS = {False: "without dispatch agent (before)", True: "with dispatch agent (after)"}
WARM_UP = 1.0
"""Seconds at the start of a saturation phase left out of its duty cycle (the queue fills)."""


def generating_seconds(worker_urls: list[str]) -> float:
    """Sum of ``portrait_worker_generating_seconds_total`` over the workers at ``worker_urls``."""
    total = 0.0
    for url in worker_urls:
        text = httpx.get(f"{url}/metrics", timeout=10).text
        total += next(float(line.split()[1]) for line in text.splitlines()
                      if line.startswith("portrait_worker_generating_seconds_total "))
    return total


@dataclass(frozen=True)
class Saturation:
    """One saturation phase: throughput and the duty cycle of the workers in rotation."""

    agent: bool
    throughput: Throughput
    duty: float


def measure_saturation_phase(cluster: LaunchedCluster, agent: bool, workers: int, job: Job, args: argparse.Namespace
                             ) -> Saturation:
    """One phase with the first ``workers`` workers in rotation (``saturation_phase``)."""
    nodes = cluster.node_names[:workers]
    with cluster.only_workers(nodes):
        return saturation_phase(cluster.public_url, [cluster.part_url(node, "worker") for node in nodes], agent, job,
                                args)


def saturation_phase(public_url: str, worker_urls: list[str], agent: bool, job: Job, args: argparse.Namespace
                     ) -> Saturation:
    """One phase: ``args.concurrency`` REST clients at ``public_url`` for ``args.seconds``; the duty cycle of the
    workers at ``worker_urls`` (those in rotation) sampled beside it."""
    samples: list[tuple[float, float]] = []

    def sample() -> None:
        for at in (WARM_UP, args.seconds):
            time.sleep(max(0.0, started + at - time.monotonic()))
            samples.append((time.monotonic(), generating_seconds(worker_urls)))

    started = time.monotonic()
    sampler = threading.Thread(target=sample, name="duty-sampler")
    sampler.start()
    throughput = rest_throughput(public_url, len(worker_urls), job, args.concurrency, args.seconds,
                                 args.max_requests, hash_pixels=False)
    sampler.join()
    (t0, g0), (t1, g1) = samples
    return Saturation(agent, throughput, (g1 - g0) / ((t1 - t0) * len(worker_urls)))


def measure_saturation(args: argparse.Namespace) -> tuple[list[Saturation], list[tuple[float, ...]]]:
    """Every phase of ``--saturation`` (both clusters up at once, phases interleaved); load averages."""
    job = Job(PROMPT, args.steps, args.size, args.size, seed=1000, guidance=args.guidance)
    # No slowstart: the phases take workers in and out of rotation, and a returning server's
    # maxconn ramps up over it (the agent's second slot would be withheld meanwhile).
    base = dataclasses.replace(ClusterOptions.from_args(args), model=f"standin:{args.standin:g}", nodes=2,
                               extra={"health": {"slowstart": 0}})
    loads = [os.getloadavg()]
    phases = []
    with contextlib.ExitStack() as stack:
        clusters = {agent: stack.enter_context(LaunchedCluster(dataclasses.replace(base, dispatch_agent=agent),
                                                               name=f"saturation-{'agent' if agent else 'plain'}"))
                    for agent in SATURATION_VARIANTS}
        for round_ in range(args.rounds):
            for agent, cluster in clusters.items():
                for workers in (1, 2):
                    phase = measure_saturation_phase(cluster, agent, workers, job, args)
                    logger.info("round %d, %s, %d worker(s): %.2f jobs/s, duty %.1f %%", round_ + 1,
                                SATURATION_VARIANTS[agent], workers, phase.throughput.per_second, 100 * phase.duty)
                    phases.append(phase)
    loads.append(os.getloadavg())
    return phases, loads


def render_saturation(args: argparse.Namespace, phases: list[Saturation], loads: list[tuple[float, ...]]) -> str:
    """The Markdown report of ``--saturation``: jobs/s, failures and duty cycle per variant and worker count."""
    rows, rates = [], {}
    for agent, name in SATURATION_VARIANTS.items():
        for workers in (1, 2):
            mine = [p for p in phases if p.agent == agent and p.throughput.workers == workers]
            total = reduce(operator.add, [p.throughput for p in mine])
            duties = [p.duty for p in mine]
            rates[agent, workers] = total.per_second
            rows.append([name, workers, total.phases, total.ok, total.failed, f"{total.per_second:.3f}",
                         f"{100 * sum(duties) / len(duties):.1f} %", f"{100 * min(duties):.1f} %"])
    ratio_rows = [[name, f"{rates[agent, 2] / rates[agent, 1]:.2f}×"] for agent, name in SATURATION_VARIANTS.items()]
    return "\n".join([
        "# GPU duty cycle under saturating load, with the fixed-latency stand-in",
        "",
        f"The workers serve `standin:{args.standin:g}`: **not a model**; each job sleeps {args.standin:g} s (the "
        f"'GPU' time), then the worker PNG-encodes a {args.size}×{args.size} image. Two clusters of two nodes, one "
        "without and one with the dispatch agent, both up at once; "
        f"{args.rounds} round(s) of a {args.seconds:g} s phase per cluster with 1 worker in rotation, then 2, "
        f"{args.concurrency} REST clients through HAProxy back to back (checking status, seed and PNG header, not "
        "decoding pixels: the clients share the machine). Duty cycle: growth of the workers' "
        f"generating seconds over each phase (its first {WARM_UP:g} s left out) / (wall time × workers).",
        "",
        f"**These are CPU numbers**: {machine_summary()}. {load_averages(loads)}. The encode competes with "
        "everything else on this machine for its cores.",
        "",
        markdown_table(["variant", "workers", "phases", "completed", "failed", "jobs/s", "duty cycle (mean)",
                        "duty cycle (worst phase)"], rows),
        "",
        markdown_table(["variant", "2 workers / 1 worker (jobs/s)"], ratio_rows),
        "",
        f"With the agent / without, 2 workers: {rates[True, 2] / rates[False, 2]:.2f}× the jobs/s.",
        "",
        f"Reproduce: `{args.reproduce}`",
    ])
