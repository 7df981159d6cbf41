"""Timing the serving paths: one job along every path, interleaved, and requests/s through HAProxy."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from bench.harness.generation import Job
from bench.harness.launched_cluster import LaunchedCluster
from bench.harness.load import OK, Clock, LoadClient, LoadRunner, Record, timed_call
from bench.harness.rest_client import RestClient

logger = logging.getLogger(__name__)


PROMPT = "studio portrait of a woman with short dark hair, soft window light, 85mm"


@dataclass(frozen=True)
class Throughput:
    """Requests/s through HAProxy with a given number of workers in rotation (one or more phases)."""

    workers: int
    clients: int
    ok: int
    failed: int
    seconds: float
    phases: int = 1

    @property
    def per_second(self) -> float:
        """Completed requests per second of wall time."""
        return self.ok / self.seconds if self.seconds > 0 else 0.0

    def __add__(self, other: Throughput) -> Throughput:
        return Throughput(self.workers, self.clients, self.ok + other.ok, self.failed + other.failed,
                          self.seconds + other.seconds, self.phases + other.phases)


def measure_latency(calls: dict[str, Callable[[Job], str]], job: Job, runs: int) -> dict[str, list[float]]:
    """Time ``runs`` repetitions of every path, round-robin with a rotating start.

    Repetition ``r`` uses seed ``job.seed + r`` on every path and checks that all paths drew
    the same pixels. One untimed warm-up call per path comes first.
    """
    keys = list(calls)
    for key in keys:
        calls[key](job)
    latencies: dict[str, list[float]] = {key: [] for key in keys}
    for rep in range(runs):
        rep_job = Job(job.prompt, job.steps, job.width, job.height, job.seed + rep, job.guidance)
        order = keys[rep % len(keys):] + keys[:rep % len(keys)]
        digests = {}
        for key in order:
            started = time.perf_counter()
            digests[key] = calls[key](rep_job)
            latencies[key].append(time.perf_counter() - started)
        if len(set(digests.values())) != 1:
            raise RuntimeError(f"paths drew different images for seed {rep_job.seed}: {digests}")
        logger.info("repetition %d/%d: %s", rep + 1, runs,
                    ", ".join(f"{k}={latencies[k][-1] * 1000:.0f}ms" for k in keys))
    return latencies


def measure_throughput(cluster: LaunchedCluster, workers: int, job: Job, clients: int, seconds: float,
                       max_requests: int, hash_pixels: bool = True) -> Throughput:
    """Requests/s through HAProxy's public ``/generate`` with ``workers`` workers in rotation.

    ``clients`` REST clients send jobs back to back for ``seconds``; the rate counts the jobs
    that completed inside that window. Without ``hash_pixels`` they check each answer's PNG
    header only (``RestClient.generate_unhashed``), leaving the CPU to the workers.
    """
    names = [node.name for node in cluster.spec.workers]
    with cluster.only_workers(names[:workers]):
        return rest_throughput(cluster.public_url, workers, job, clients, seconds, max_requests, hash_pixels)


def rest_throughput(public_url: str, workers: int, job: Job, clients: int, seconds: float, max_requests: int,
                    hash_pixels: bool = True) -> Throughput:
    """``measure_throughput`` at ``public_url``, with the ``workers`` in rotation there (counted, not chosen)."""
    clock = Clock()
    rest = [RestClient(public_url) for _ in range(clients)]

    def client_call(index: int) -> Callable[[int], Record]:
        def call(i: int) -> Record:
            numbered = Job(job.prompt, job.steps, job.width, job.height, job.seed + 1000 * index + i, job.guidance)
            generate = rest[index].generate if hash_pixels else rest[index].generate_unhashed
            return timed_call(clock, f"rest-{index}", "rest", True, lambda: generate(numbered))
        return call

    records = LoadRunner(
        [LoadClient(f"rest-{i}", client_call(i), max_requests=max_requests) for i in range(clients)], seconds
    ).run()
    for client in rest:
        client.close()
    # Steady state: what completed inside the window (requests still running at its end finish
    # but do not count, so the tail of a phase does not dilute it).
    done = [r for r in records if r.end <= seconds]
    ok = [r for r in done if r.outcome == OK]
    return Throughput(workers, clients, len(ok), len(done) - len(ok), seconds)
