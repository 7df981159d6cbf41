"""A rolling restart of the nodes of one node host, through that host's own sidecar, under load: no request fails.

A balancer host and two node hosts in network namespaces (``bench.harness.hosts_cluster``); node host ``n1``
runs two nodes, ``n2`` one; the workers serve the fixed-latency stand-in (the subject is the operation, not
the model). While a REST client, a reused ``gradio_client`` and a browser-protocol
client send jobs through the balancer, ``python -m balancer.cli rolling-restart`` runs on ``n1``
against its sidecar (which has no HAProxy: it drains each node through its host agent, waits on the
parts' own request counts, parks and unparks the web front through the agent too). Checked: every
request succeeds, both nodes of ``n1`` run new processes and ``n2``'s the same ones, and HAProxy never
had zero workers UP. The extra delay (slowest request of each client against its median) is printed and
written to ``test-artifacts/hosts-rolling-restart.json``.

Root only, with ``ip`` and Debian's ``iptables``. Opt-in (``-m "soak and hosts"``, about 35 s): the default suite
restarts a node host's node in ``tests/test_hosts_tls.py`` and runs a rolling restart under never-idle load in
``tests/test_rolling_jobs.py``.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from balancer.cli.ctl import PASSWORD_ENV
from balancer.config.loading import load_cluster_file, parse_cluster
from bench.harness.hosts_cluster import BALANCER, STANDIN_WORKER, HostsCluster
from bench.harness.load import OK, Clock, FewestUp, Record, mixed_clients, under_load, workers_up
from bench.harness.netns import NetworkLab, missing_for_labs
from bench.harness.processes import REPO, Processes
from tests.helpers import record_figures
from tests.suite_cluster import suite_health
from webui.contract import TRAFFIC_PATH

pytestmark = [pytest.mark.soak, pytest.mark.hosts,
              pytest.mark.skipif(missing_for_labs() is not None, reason=missing_for_labs() or "")]

ARTIFACT = REPO / "test-artifacts" / "hosts-rolling-restart.json"
HEALTH = suite_health({"host_agent_interval": 0.5})
"""The default checks (2 s timeout), not the example's 0.5 s ones: the subject is the operation, not how soon a lost
host is out, and on a loaded machine 0.5 s checks mark a busy web front DOWN, which sends a Gradio call's stream
to another front than its join."""
NODES = {"node1": "n1", "node3": "n1", "node2": "n2"}
"""Node -> node host: ``n1``, whose nodes are restarted, runs two."""
WORKER_PATH = {"web_fronts": False}
"""The web fronts on the worker path: what is checked is how a node host parks and unparks them (on jobs they hand
their clients on instead: ``tests/test_rolling_jobs.py``)."""
RESTARTED = "n1"
LOAD_SECONDS = 200.0
"""Upper bound of the load; it stops as soon as the rolling restart has ended."""
THINK_TIME = 3.0
"""Seconds a UI client waits between two jobs (a web front switches only while its clients are idle)."""
SETTLE = 0.5
"""The rolling restart's ``--settle``: far longer than the gaps between the requests of one job."""


def ctl(cluster: HostsCluster, host: str, *args: str) -> subprocess.CompletedProcess:
    """``python -m balancer.cli ARGS`` on ``host`` against its sidecar (on its loopback), password in the env."""
    password = load_cluster_file(cluster.file)["stats"]["password"]
    return subprocess.run(["ip", "netns", "exec", cluster.lab.namespace(host), sys.executable, "-m", "balancer.cli",
                           *args], capture_output=True, text=True, env={**os.environ, PASSWORD_ENV: password},
                          timeout=LOAD_SECONDS)


def part_pids(cluster: HostsCluster, host: str) -> dict[tuple[str, str], int]:
    """(node, part) -> pid of every part ``host``'s sidecar runs (its ``/status``)."""
    answer = ctl(cluster, host, "status", "--json")
    assert answer.returncode == 0, answer.stderr
    return {(node, part): entry["pid"] for node, parts in json.loads(answer.stdout)["nodes"].items()
            for part, entry in parts.items()}


def sticky_counts(cluster: HostsCluster) -> dict[str, int]:
    """Sticky node -> requests every web front counted for it (HAProxy's header reached them)."""
    counts: dict[str, int] = {}
    for node in parse_cluster(load_cluster_file(cluster.file)).nodes:
        assert node.web is not None
        found = httpx.get(node.web.url + TRAFFIC_PATH, timeout=10).raise_for_status().json()["sticky"]
        for sticky, entry in found.items():
            counts[sticky] = counts.get(sticky, 0) + entry["total"]
    return counts


def extra_delays(records: list[Record]) -> dict[str, float]:
    """Client kind -> its slowest request's seconds beyond its median one."""
    kinds = sorted({record.kind for record in records})
    return {kind: round(max(latencies) - statistics.median(latencies), 2)
            for kind in kinds if (latencies := [r.latency for r in records if r.kind == kind])}


def test_rolling_restart_of_one_node_host_under_load_fails_no_request(tmp_path: Path) -> None:
    with Processes("hosts-rolling") as processes, NetworkLab([BALANCER, "n1", "n2"], processes) as lab:
        cluster = HostsCluster(lab, tmp_path, HEALTH, NODES, worker_args=STANDIN_WORKER, jobs=WORKER_PATH)
        cluster.start(timeout=240)
        before = {host: part_pids(cluster, host) for host in ("n1", "n2")}
        clock, closers = Clock(), []
        result: dict[str, subprocess.CompletedProcess] = {}

        def operate(stop: threading.Event) -> None:
            stop.wait(1.0)  # some load first
            result["ctl"] = ctl(cluster, RESTARTED, "rolling-restart", "--drain-timeout", "100",
                                "--settle", str(SETTLE))

        with FewestUp(workers_up(cluster.api), len(NODES)) as fewest:
            records = under_load(mixed_clients(cluster.url, clock, closers, THINK_TIME, "node host portrait"),
                                 closers, operate, LOAD_SECONDS)
        after = {host: part_pids(cluster, host) for host in ("n1", "n2")}
        cluster.wait_all_up(timeout=60)
        sticky = sticky_counts(cluster)
        public_traffic = httpx.get(cluster.url + TRAFFIC_PATH, timeout=10).status_code

    restart = result["ctl"]
    print(restart.stdout, restart.stderr)  # the operation's timeline
    failed = [record for record in records if record.outcome != OK]
    delays = extra_delays(records)
    figures = {"requests": len(records), "failed": len(failed), "extra_s": delays,
               "median_s": {kind: round(statistics.median(r.latency for r in records if r.kind == kind), 2)
                            for kind in delays},
               "fewest_workers_up": fewest.fewest, "load_average": os.getloadavg()}
    record_figures(ARTIFACT, f"rolling-restart-{RESTARTED}", figures)
    print(f"\nrolling restart of {RESTARTED}'s nodes under load: {len(records)} requests, {len(failed)} failed; "
          f"slowest beyond median {delays} s; fewest workers UP {fewest.fewest}; load {figures['load_average']}")
    for record in failed:
        print(f"failed: {record.kind} {record.start:.1f}-{record.end:.1f} s: {record.detail}")

    assert restart.returncode == 0, restart.stdout + restart.stderr
    assert "a job under way may fail" not in restart.stdout  # each web front came back while its clients were idle
    assert failed == [], [(r.kind, round(r.start, 1), round(r.end, 1), r.detail) for r in failed]
    assert {record.kind for record in records} == {"rest", "gradio_client", "browser"}
    assert fewest.fewest >= 1
    assert set(before[RESTARTED]) == {(node, part) for node in ("node1", "node3") for part in ("web", "worker")}
    assert all(after[RESTARTED][key] not in (None, pid) for key, pid in before[RESTARTED].items()), (before, after)
    assert after["n2"] == before["n2"]  # the other host's nodes untouched
    assert sum(sticky.values()) > 0 and set(sticky) <= set(NODES), sticky  # what the unpark waited on
    assert public_traffic == 404  # a node's counts are not the public's
