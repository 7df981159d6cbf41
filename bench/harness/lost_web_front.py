"""Losing the node host of a UI client's sticky web front mid-job, and what it cost that client.

``lose_web_front_mid_job`` runs a job from a ``gradio_client`` or a browser tab through the hosts lab
(``bench.harness.hosts_cluster``), breaks its web front's node host (``bench.harness.lost_host.FAULTS``)
and resends the job as a user would until an image comes; ``tests/test_hosts.py`` checks the
outcome, ``bench/hosts.py`` tabulates it.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace

from bench.harness.browser_client import BrowserProtocolClient
from bench.harness.generation import CallFailed, Job, Reply
from bench.harness.gradio_api_client import GradioApiClient
from bench.harness.hosts_cluster import NODE_HOSTS, HostsCluster
from bench.harness.lost_host import FAULTS
from bench.harness.waiting import wait_until

UI_CLIENTS = ("gradio_client", "browser")
"""UI clients whose sticky web front is lost (``lose_web_front_mid_job``)."""
UI_JOB = Job(prompt="studio portrait, lost web front", steps=8, width=512, height=512, seed=21)


@dataclass
class Attempt:
    """One try of a UI job: when it ended (seconds since the first was sent) and how."""

    ended_s: float
    outcome: str


@dataclass
class LostWebFront:
    """What losing the node host of a UI client's sticky web front mid-job cost that client."""

    fault: str
    client: str
    web_node: str
    """The client's web front before the fault (its cookie)."""
    normal_s: float
    """The same client's job just before, with nothing wrong."""
    fault_into_job_s: float
    attempts: list[Attempt]
    reply: Reply | None
    """The image, from the try that got one (None: none did within the budget)."""

    @property
    def job_s(self) -> float:
        """From the first send until the image (or the last try)."""
        return self.attempts[-1].ended_s if self.attempts else 0.0

    def figures(self) -> dict[str, object]:
        """The measured seconds, rounded. ``extra_s``: the job (with its resends) beyond a normal one;
        ``resend_after_s``: when the first try failed, from the fault (None: it did not fail)."""
        first_failed = self.attempts[0] if self.attempts and self.attempts[0].outcome != "ok" else None
        return {"client": self.client, "web_node": self.web_node, "finished": self.reply is not None,
                "tries": len(self.attempts), "job_s": round(self.job_s, 2), "normal_s": round(self.normal_s, 2),
                "extra_s": round(self.job_s - self.normal_s, 2), "fault_into_job_s": round(self.fault_into_job_s, 2),
                "resend_after_s": round(first_failed.ended_s - self.fault_into_job_s, 2) if first_failed else None,
                "first_try": self.attempts[0].outcome if self.attempts else None,
                "answered_by_web_node": self.reply.web_node if self.reply else None}


def ui_client(kind: str, url: str) -> GradioApiClient | BrowserProtocolClient:
    """A reused ``gradio_client`` or a browser tab (page loaded) through the balancer at ``url``."""
    if kind == "gradio_client":
        return GradioApiClient(url + "/")
    tab = BrowserProtocolClient(url)
    tab.open()
    return tab


def resend_until_done(client: GradioApiClient | BrowserProtocolClient, job: Job, started: float, budget: float,
                      attempts: list[Attempt]) -> Reply | None:
    """What a user does when a job fails: send it again (same client, same page), until an image or ``budget`` s."""
    while time.monotonic() - started < budget:
        try:
            reply = client.generate(job)
        except CallFailed as exc:
            attempts.append(Attempt(time.monotonic() - started, str(exc)[:200]))
            time.sleep(0.2)
            continue
        attempts.append(Attempt(time.monotonic() - started, "ok"))
        return reply
    return None


def lose_web_front_mid_job(cluster: HostsCluster, fault: str, kind: str, into_job: float,
                           budget: float = 120.0) -> LostWebFront:
    """A UI client (``kind``) runs a job; ``into_job`` s into its next one, its web front's node host breaks; it
    resends until it gets an image; the host is healed once it did."""
    cluster.wait_all_up(timeout=60)
    client = ui_client(kind, cluster.url)
    try:
        warm = time.monotonic()
        web_node = client.generate(UI_JOB).web_node
        normal_s = time.monotonic() - warm
        if web_node not in NODE_HOSTS:
            raise RuntimeError(f"the {kind} client's job names no known web front: {web_node!r}")
        lost_host = NODE_HOSTS[web_node]
        attempts: list[Attempt] = []
        answer: dict[str, Reply | None] = {}
        started = time.monotonic()
        job = threading.Thread(target=lambda: answer.update(
            reply=resend_until_done(client, replace(UI_JOB, seed=UI_JOB.seed + 1), started, budget, attempts)))
        job.start()
        wait_until(cluster.busy_worker, "the UI job running on a worker", 30, 0.01)
        time.sleep(max(0.0, started + into_job - time.monotonic()))
        break_host, heal_host = FAULTS[fault]
        faulted = time.monotonic()
        break_host(cluster.lab, lost_host)
        try:
            job.join(timeout=budget + 30)
        finally:
            heal_host(cluster.lab, lost_host)
        cluster.wait_all_up(timeout=60)
    finally:
        client.close()
    return LostWebFront(fault=fault, client=kind, web_node=web_node, normal_s=normal_s,
                        fault_into_job_s=faulted - started, attempts=attempts, reply=answer.get("reply"))
