"""Two balancers, one address: a killed balancer host's floating address moves, sessions keep their web front.

Two balancer hosts (``launch.py --role balancer``: HAProxy, its sidecar and keepalived) share a
floating address; two node hosts run the nodes (``bench.harness.pair``; their workers serve the
fixed-latency stand-in: the subject is the balancers, not the model), each in its own network
namespace. A browser-style client (cookie jar) keeps loading the page through the floating address while
a REST job runs; then the balancer holding the address dies (every process SIGKILLed, its
link down). Checked: the address moves to the other balancer, every request succeeds with the
client's retry policy (in-flight requests through the dead balancer are lost by nature: their TCP
connections die), the browser's cookie keeps its web front, and cookie-less requests carrying a
Gradio session hash go to the same web front on both balancers. Each balancer's sidecar says in
``/status``, ``/metrics`` and ``ctl status`` whether it holds the address (keepalived's state): MASTER
on the holder, BACKUP on the other, and MASTER on the new holder after the move. The move time and the extra delays
are printed and written to ``test-artifacts/pair-failover.json`` (``python -m bench.pair`` tabulates them).

Root only, with ``ip``, Debian's ``iptables`` and ``keepalived``; select with ``-m hosts``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import httpx
import pytest

from balancer.config.loading import load_cluster_file
from bench.harness.hosts_cluster import NODE_HOSTS, STANDIN_WORKER
from bench.harness.netns import NetworkLab, missing_for_labs
from bench.harness.pair import BALANCERS, LAB_HOSTS, PairCluster, lose_balancer_mid_load
from bench.harness.processes import REPO, Processes
from bench.harness.waiting import wait_until
from tests.helpers import record_figures, unquotable_checkout
from tests.suite_cluster import suite_health


def _missing() -> str | None:
    if shutil.which("keepalived") is None:
        return "the floating-address test needs Debian's keepalived (scripts/setup.sh --dev as root installs it)"
    return unquotable_checkout() or missing_for_labs()


pytestmark = [pytest.mark.hosts, pytest.mark.skipif(_missing() is not None, reason=_missing() or "")]

ARTIFACT = REPO / "test-artifacts" / "pair-failover.json"
EXAMPLE = load_cluster_file(REPO / "assets" / "cluster.pair.example.yaml")
HEALTH = suite_health({**EXAMPLE["health"], "slowstart": 0})
"""The documented checks (the dispatch agents polled at the suite's interval); no slow start, so both balancers
weigh the nodes alike from the first second."""
ADVERT = EXAMPLE["floating"]["advert_interval"]


def test_a_killed_balancer_host_moves_the_address_and_keeps_sessions(tmp_path: Path) -> None:
    with Processes("pair") as processes, NetworkLab(LAB_HOSTS, processes) as lab:
        cluster = PairCluster(lab, tmp_path, HEALTH, ADVERT, worker_args=STANDIN_WORKER)
        cluster.start(timeout=240)
        holder = cluster.holder()
        states_before = {host: cluster.vrrp_state(host) for host in BALANCERS.values()}
        holder_says = cluster.ctl_status(holder) if holder else ""
        holder_metrics = cluster.sidecar_metrics(holder) if holder else ""
        lost = lose_balancer_mid_load(cluster, settle=1.0)  # ten page loads after the job
        new_holder_says = wait_until(lambda: cluster.vrrp_state(lost.moved_to) == "MASTER" or None,
                                     "the new holder's sidecar saying MASTER", 10, 0.2)
    figures = {**lost.figures(), "advert_interval_s": ADVERT, "load_average": os.getloadavg()}
    record_figures(ARTIFACT, "balancer-killed", figures)
    print(f"\nbalancer {lost.killed} killed: address on {lost.moved_to} after {figures['address_moved_after_s']} s "
          f"(advert {ADVERT} s); no page loaded for {figures['page_gap_s']} s at most; "
          f"{figures['page_requests']} page loads, {figures['page_requests_retried']} retried, "
          f"{figures['page_requests_failed']} failed, most extra delay {figures['page_most_extra_s']} s; "
          f"the REST job took {figures['rest_job_attempts']} attempt(s), {figures['rest_job_s']} s; "
          f"load {figures['load_average']}")

    assert states_before == {host: "MASTER" if host == holder else "BACKUP" for host in BALANCERS.values()}
    assert "MASTER (this balancer holds it)" in holder_says
    assert 'portrait_sidecar_vrrp_state{state="MASTER"} 1.0' in holder_metrics
    assert 'portrait_sidecar_vrrp_state{state="BACKUP"} 0.0' in holder_metrics
    assert new_holder_says
    assert lost.moved_to == next(host for host in BALANCERS.values() if host != lost.killed)
    assert lost.moved_s < 10  # a logic bound: a few advert intervals, not a timeout
    assert [o for o in lost.browser.outcomes if not o.ok] == []
    assert isinstance(lost.job, httpx.Response) and lost.job.status_code == 200
    assert lost.web_front in NODE_HOSTS and lost.fronts_seen == {lost.web_front}  # the cookie kept its web front
    assert set(lost.routed_before.values()) <= set(NODE_HOSTS), lost.routed_before
    assert lost.routed_after == lost.routed_before  # a session hash routes alike on both balancers
