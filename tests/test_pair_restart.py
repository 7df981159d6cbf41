"""Two balancers, one address: the holder's HAProxy and keepalived crash; the address is never on both.

The pair of ``tests/test_pair.py`` (``bench.harness.pair``: two balancers sharing a floating address, two
node hosts with the fixed-latency stand-in worker, in network namespaces). While a client loads the page
through the floating address with the documented resend advice (docs/api.md), every HAProxy and keepalived
process of the balancer holding the address is SIGKILLed; its host and sidecar live on
(``bench.harness.pair_crash``). A SIGKILLed keepalived leaves its address on the interface and its pid
files behind. Checked: its sidecar restarts keepalived and it comes back on the first try (no 'daemon is
already running'); the sidecar says keepalived ready only once keepalived's notify script wrote its state;
``ip -o addr`` sampled every 50 ms in both namespaces never shows the address on both balancers; every page
load succeeds. Figures go to ``test-artifacts/pair-failover.json``.

Root only, with ``ip``, Debian's ``iptables`` and ``keepalived``; select with ``-m hosts``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench.harness.hosts_cluster import STANDIN_WORKER
from bench.harness.netns import NetworkLab
from bench.harness.pair import LAB_HOSTS, PairCluster
from bench.harness.pair_crash import crash_holder_mid_traffic
from bench.harness.processes import Processes
from tests.helpers import record_figures
from tests.test_pair import ADVERT, ARTIFACT, HEALTH, _missing

pytestmark = [pytest.mark.hosts, pytest.mark.skipif(_missing() is not None, reason=_missing() or "")]


def test_a_crashed_holders_address_is_never_on_both_balancers(tmp_path: Path) -> None:
    with Processes("pair-restart") as processes, NetworkLab(LAB_HOSTS, processes) as lab:
        cluster = PairCluster(lab, tmp_path, HEALTH, ADVERT, worker_args=STANDIN_WORKER)
        cluster.start(timeout=240)
        crashed = crash_holder_mid_traffic(cluster)
    figures = {**crashed.figures(), "advert_interval_s": ADVERT, "load_average": os.getloadavg()}
    record_figures(ARTIFACT, "holder-daemons-killed", figures)
    print(f"\n{crashed.holder}'s HAProxy and keepalived SIGKILLed: address on both balancers for "
          f"{figures['both_held_s']} s (from +{figures['both_held_from_s']} s to +{figures['both_held_until_s']} s), "
          f"on {figures['final_holders']} alone after {figures['settled_after_s']} s; keepalived started "
          f"{figures['keepalived_starts']} time(s); {figures['page_requests']} page loads, "
          f"{figures['page_requests_resent']} resent, {figures['page_requests_failed']} failed; load {os.getloadavg()}")

    assert len(crashed.crashed_pids) >= 2  # HAProxy and keepalived (with its VRRP child)
    assert "already running" not in crashed.keepalived_log
    assert crashed.keepalived_starts() == 1, crashed.events
    assert crashed.ready_before_state() == [], (crashed.events, crashed.watch.state_writes)
    assert crashed.watch.both_held() == []
    assert len(crashed.watch.samples[-1][1]) == 1  # and it ended on one balancer
    assert [o for o in crashed.browser.outcomes if not o.ok] == []
