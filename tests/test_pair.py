"""Two balancers, one address: a killed balancer host's floating address moves, sessions keep their web front.

Two balancer hosts (``launch.py --role balancer``: HAProxy, its sidecar and keepalived) share a
floating address; two node hosts run the nodes (``bench.harness.pair``), each in its own network
namespace. A browser-style client (cookie jar) keeps loading the page through the floating address
while a REST job runs; then the balancer holding the address dies (every process SIGKILLed, its
link down). Checked: the address moves to the other balancer, every request succeeds with the
client's retry policy (in-flight requests through the dead balancer are lost by nature: their TCP
connections die), the browser's cookie keeps its web front, and cookie-less requests carrying a
Gradio session hash go to the same web front on both balancers. The move time and the extra delays
are printed and written to ``test-artifacts/pair-failover.json``.

Root only, with ``ip``, Debian's ``iptables`` and ``keepalived``; select with ``-m hosts``.
"""

from __future__ import annotations

import os
import shutil
import statistics
import threading
import time
from pathlib import Path

import httpx
import pytest

from balancer.cluster import load_cluster_file
from balancer.haproxy_config import COOKIE_NAME
from bench.harness.hosts import JOB, NODE_HOSTS
from bench.harness.netns import NetworkLab, missing_for_labs
from bench.harness.pair import BALANCERS, LAB_HOSTS, PairCluster, Retrying, session_hash_nodes
from bench.harness.processes import REPO, Processes
from bench.harness.waiting import wait_until
from tests.helpers import record_figures


def _missing() -> str | None:
    if shutil.which("keepalived") is None:
        return "the floating-address test needs Debian's keepalived (scripts/setup.sh --dev as root installs it)"
    return missing_for_labs()


pytestmark = [pytest.mark.hosts, pytest.mark.skipif(_missing() is not None, reason=_missing() or "")]

ARTIFACT = REPO / "test-artifacts" / "pair-failover.json"
EXAMPLE = load_cluster_file(REPO / "assets" / "cluster.pair.example.yaml")
HEALTH = {**EXAMPLE["health"], "slowstart": 0}
"""The documented checks; no slow start, so both balancers weigh the nodes alike from the first second."""
ADVERT = EXAMPLE["floating"]["advert_interval"]
SESSION_HASHES = [f"pair-session-{index}" for index in range(12)]


def test_a_killed_balancer_host_moves_the_address_and_keeps_sessions(demo_model_dir: Path, tmp_path: Path) -> None:
    with Processes("pair") as processes, NetworkLab(LAB_HOSTS, processes) as lab:
        cluster = PairCluster(lab, tmp_path, HEALTH, ADVERT)
        cluster.start(timeout=240)
        holder = cluster.holder()
        assert holder is not None
        survivor = next(host for host in BALANCERS.values() if host != holder)
        routed_before = session_hash_nodes(cluster.url, SESSION_HASHES)
        assert set(routed_before.values()) <= set(NODE_HOSTS), routed_before

        browser = Retrying(httpx.Client(base_url=cluster.url, timeout=httpx.Timeout(5, connect=1)))
        assert browser.request("GET", "/") is not None
        web_front = browser.client.cookies.get(COOKIE_NAME)
        assert web_front in NODE_HOSTS
        fronts_seen: set[str | None] = set()
        stop = threading.Event()

        def browse() -> None:
            while not stop.is_set():
                browser.request("GET", "/")
                fronts_seen.add(browser.client.cookies.get(COOKIE_NAME))
                stop.wait(0.1)

        rest = Retrying(httpx.Client(base_url=cluster.url, timeout=httpx.Timeout(120, connect=1)), budget=180)
        job: dict[str, httpx.Response | None] = {}
        threads = [threading.Thread(target=browse),
                   threading.Thread(target=lambda: job.update(answer=rest.request("POST", "/generate", json=JOB)))]
        try:
            for thread in threads:
                thread.start()
            wait_until(cluster.busy_worker, "the REST job running on a worker", 30, 0.01)
            killed = time.monotonic()
            cluster.kill_balancer(holder)
            moved_to = wait_until(cluster.holder, "the floating address on the other balancer", 20, 0.02)
            moved_s = time.monotonic() - killed
            threads[1].join(timeout=200)
            time.sleep(2)  # the browser keeps going through the new holder
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=200)
        routed_after = session_hash_nodes(cluster.url, SESSION_HASHES)

        normal = statistics.median(o.seconds for o in browser.outcomes if o.started + o.seconds < killed)
        after_kill = [o for o in browser.outcomes if o.started + o.seconds >= killed]
        first_answer_s = min(o.started + o.seconds for o in after_kill if o.ok) - killed
        figures = {
            "advert_interval_s": ADVERT, "address_moved_after_s": round(moved_s, 2),
            "first_page_after_kill_s": round(first_answer_s, 2),
            "page_requests": len(browser.outcomes), "page_requests_failed": sum(not o.ok for o in browser.outcomes),
            "page_requests_retried": sum(o.attempts > 1 for o in browser.outcomes),
            "page_normal_s": round(normal, 3),
            "page_most_extra_s": round(max(o.seconds for o in after_kill) - normal, 2),
            "rest_job_attempts": rest.outcomes[0].attempts if rest.outcomes else None,
            "rest_job_s": round(rest.outcomes[0].seconds, 2) if rest.outcomes else None,
            "web_front": web_front, "session_hashes_same_front": sum(
                routed_before[h] == routed_after[h] for h in SESSION_HASHES),
            "session_hash_fronts": sorted({str(node) for node in routed_before.values()}),
            "load_average": os.getloadavg(),
        }
        record_figures(ARTIFACT, "balancer-killed", figures)
        print(f"\nbalancer {holder} killed: address on {moved_to} after {figures['address_moved_after_s']} s "
              f"(advert {ADVERT} s); first page through it {figures['first_page_after_kill_s']} s after the kill; "
              f"{figures['page_requests']} page loads, {figures['page_requests_retried']} retried, "
              f"{figures['page_requests_failed']} failed, most extra delay {figures['page_most_extra_s']} s; "
              f"the REST job took {figures['rest_job_attempts']} attempt(s), {figures['rest_job_s']} s; "
              f"load {figures['load_average']}")

        assert moved_to == survivor
        assert moved_s < 10  # a logic bound: a few advert intervals, not a timeout
        assert [o for o in browser.outcomes if not o.ok] == []
        assert isinstance(job.get("answer"), httpx.Response) and job["answer"].status_code == 200
        assert fronts_seen == {web_front}  # the browser's cookie kept its web front on the new balancer
        assert routed_after == routed_before  # the session hash routes alike on both balancers
