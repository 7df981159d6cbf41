"""Losing a node host mid-job in the hosts lab (``bench.harness.hosts_cluster``), and what it cost.

``lose_host_mid_job`` breaks the node host that runs a REST job (``FAULTS``: link down, packets
dropped, every process frozen) and measures what that cost; ``tests/test_hosts.py`` checks the
outcome, ``bench/hosts.py`` tabulates it.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from balancer.haproxy.process import status_is_out
from bench.harness.hosts_cluster import NODE_HOSTS, HostsCluster
from bench.harness.netns import NetworkLab
from bench.harness.waiting import wait_until

FAULTS: dict[str, tuple[Callable[[NetworkLab, str], object], Callable[[NetworkLab, str], object]]] = {
    "link-down": (lambda lab, host: lab.set_link(host, False), lambda lab, host: lab.set_link(host, True)),
    "packets-dropped": (lambda lab, host: lab.drop_packets(host, True),
                        lambda lab, host: lab.drop_packets(host, False)),
    "frozen": (lambda lab, host: lab.signal_host(host, signal.SIGSTOP),
               lambda lab, host: lab.signal_host(host, signal.SIGCONT)),
}
"""Fault name -> (break the host, heal it)."""


@dataclass
class LostHost:
    """What losing a node host mid-job cost."""

    fault: str
    lost_node: str
    response: httpx.Response | Exception
    job_s: float
    """The whole job, as its client saw it."""
    fault_into_job_s: float
    out_after_s: float
    """From the fault until HAProxy had the lost worker out of rotation (new jobs avoid it)."""
    back_after_heal_s: float

    @property
    def replay_s(self) -> float | None:
        """How long the job took on the worker that answered it (its own timings); None without an image."""
        if not isinstance(self.response, httpx.Response) or self.response.status_code != 200:
            return None
        return self.response.json()["timings"]["total_ms"] / 1000

    def figures(self) -> dict[str, object]:
        """The measured seconds, rounded. ``extra_s``: the job's time beyond its run on the worker that
        answered (what the same job cost at that moment without a fault; on a shared CPU that varies
        too much for a fixed baseline); ``overhead_s``: that, less the work lost on the broken host
        (the time from the job's start to the fault)."""
        replay = self.replay_s
        extra = None if replay is None else self.job_s - replay
        return {"lost_node": self.lost_node, "job_s": round(self.job_s, 2),
                "replay_s": None if replay is None else round(replay, 2),
                "extra_s": None if extra is None else round(extra, 2),
                "overhead_s": None if extra is None else round(extra - self.fault_into_job_s, 2),
                "fault_into_job_s": round(self.fault_into_job_s, 2),
                "out_of_rotation_after_s": round(self.out_after_s, 2),
                "back_after_heal_s": round(self.back_after_heal_s, 2)}

    @property
    def survivor(self) -> str:
        """The node that should have finished the job."""
        return next(node for node in NODE_HOSTS if node != self.lost_node)


def lose_host_mid_job(cluster: HostsCluster, fault: str, into_job: float) -> LostHost:
    """Send one job, break the host running it ``into_job`` seconds later, heal it once the job ended."""
    cluster.wait_all_up(timeout=60)
    answer: dict[str, object] = {}

    def client() -> None:
        try:
            answer["response"] = cluster.generate()
        except httpx.HTTPError as exc:
            answer["response"] = exc
        answer["ended"] = time.monotonic()

    job = threading.Thread(target=client)
    started = time.monotonic()
    job.start()
    lost_node = wait_until(cluster.busy_worker, "the job running on a worker", 30, 0.01)
    lost_host = NODE_HOSTS[lost_node]
    time.sleep(max(0.0, started + into_job - time.monotonic()))
    break_host, heal_host = FAULTS[fault]
    faulted = time.monotonic()
    break_host(cluster.lab, lost_host)
    try:
        wait_until(lambda: status_is_out(cluster.statuses()[f"workers/{lost_node}"]), "lost worker out", 60, 0.02)
        out = time.monotonic()
        job.join(timeout=240)
    finally:
        heal_host(cluster.lab, lost_host)
    healed = time.monotonic()
    cluster.wait_all_up(timeout=60)
    return LostHost(fault=fault, lost_node=lost_node, response=answer.get("response", TimeoutError("no answer")),
                    job_s=float(answer.get("ended", healed)) - started, fault_into_job_s=faulted - started,
                    out_after_s=out - faulted, back_after_heal_s=time.monotonic() - healed)
