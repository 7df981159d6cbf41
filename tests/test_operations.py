"""Operations on a real cluster (``launch.py``, two nodes; the workers serve the fixed-latency stand-in, not a
model: the subject is the operations): ``add-node`` / ``remove-node`` under REST and ``gradio_client`` load (no
request fails, the new node takes jobs and gets a cookie, its processes and servers go), and a node added at
runtime that survives an HAProxy restart by the sidecar. The rolling restart under load is
``tests/test_rolling_jobs.py``, which uses this module's helpers."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator

import httpx
import psutil
import pytest

from balancer.cli.ctl import PASSWORD_ENV
from bench.harness.launched_cluster import LaunchedCluster
from bench.harness.load import OK, Clock, FewestUp, LoadClient, mixed_clients, under_load
from bench.harness.load import workers_up as count_workers_up
from bench.harness.processes import Processes
from bench.harness.waiting import wait_until
from tests.suite_cluster import suite_options
from webui.contract import READY_PATH

NODES = ("node1", "node2")
PARTS = ("web", "worker")
LOAD_SECONDS = 400.0
"""Upper bound of the load; it stops as soon as the rolling restart has ended."""
THINK_TIME = 3.0
"""Seconds a UI client (gradio_client, browser) waits between two jobs, as a person would: a drained
web front is switched (out, and back in) only while all its sticky clients are between two jobs at
once, for ``SETTLE`` seconds."""
SETTLE = 0.5
"""The rolling restart's ``--settle``: far longer than the gaps between the requests of one job."""
MODEL, NEW_MODEL = "standin:0.3", "standin:0.25"
"""The workers' model, and the one the rolling restart gives them (seconds per job, in ``/readyz``)."""
HEALTH = {"down_interval": 0.25, "slowstart": 0}
"""A restarted or added server is checked every 0.25 s until UP, and takes its full share at once: the subject is
the operations, not the default check pace nor the ramp-up (a new node takes jobs, and cookies, without 10 s
of slow start)."""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LaunchedCluster]:
    options = suite_options(model=MODEL, nodes=len(NODES), threads=1, start_timeout=240,
                            sidecar={"probe_interval": 0.5, "stop_grace": 5}, extra={"health": HEALTH})
    with Processes("operations") as processes:
        with LaunchedCluster(options, name="operations", processes=processes,
                             run_dir=tmp_path_factory.mktemp("operations")) as launched:
            yield launched


def workers_up(cluster: LaunchedCluster) -> FewestUp:
    """The fewest workers HAProxy had UP at any poll."""
    return FewestUp(count_workers_up(cluster.runtime), len(NODES))


def load_clients(cluster: LaunchedCluster, clock: Clock, closers: list) -> list[LoadClient]:
    """One REST client with no pause, one reused gradio_client and one browser tab with a think time."""
    return mixed_clients(cluster.public_url, clock, closers, THINK_TIME)


def ctl(cluster: LaunchedCluster, *args: str) -> subprocess.CompletedProcess:
    """``python -m balancer.cli ARGS`` against the cluster's sidecar, the password in the environment."""
    env = {**os.environ, PASSWORD_ENV: cluster.spec.stats.password.get_secret_value()}
    return subprocess.run([sys.executable, "-m", "balancer.cli", *args, "--sidecar", cluster.sidecar_url],
                          capture_output=True, text=True, env=env, timeout=LOAD_SECONDS)


def worker_model(cluster: LaunchedCluster, node: str) -> str:
    """``standin:SECONDS`` as the worker's ``/readyz`` describes what it serves."""
    pipeline = httpx.get(cluster.part_url(node, "worker") + READY_PATH, timeout=10).json()["pipeline"]
    return f"standin:{pipeline['seconds_per_job']:g}"


def sidecar_status(cluster: LaunchedCluster) -> dict:
    return httpx.get(cluster.sidecar_url + "/status", timeout=10).raise_for_status().json()


def test_add_node_then_remove_node_under_load_fails_no_request(cluster: LaunchedCluster) -> None:
    cluster.wait_all_ready(120)
    unknown = ctl(cluster, "remove-node", "nosuch")
    assert unknown.returncode == 1 and "no managed node 'nosuch'" in unknown.stderr, unknown.stderr
    clock, closers = Clock(), []
    outcome: dict[str, object] = {}
    clients = load_clients(cluster, clock, closers)

    def operate(stop: threading.Event) -> None:
        stop.wait(2.0)
        outcome["add"] = ctl(cluster, "add-node", "--json", "--ready-timeout", "180")
        node = "node3"
        servers = {(s.backend, s.server): s for s in cluster.runtime.servers()}
        outcome["servers"] = {key: server.status for key, server in servers.items() if key[1] == node}
        outcome["status"] = sidecar_status(cluster)
        # What an HAProxy restarted by the sidecar reads: the node is in it, as a server of each backend.
        outcome["config"] = cluster.spec.config_path.read_text()
        outcome["took_a_job"] = takes_a_job(cluster, node)
        cookies: set[str | None] = set()
        for _ in range(120):  # new browsers until one is given node3
            with httpx.Client(timeout=10) as fresh:
                fresh.get(cluster.public_url + "/")
                cookies.add(fresh.cookies.get("PORTRAIT_NODE"))
            if node in cookies:
                break
        outcome["cookies"] = cookies
        outcome["pids"] = {part: entry["pid"] for part, entry in outcome["status"]["nodes"][node].items()}
        outcome["remove"] = ctl(cluster, "remove-node", node, "--settle", str(SETTLE), "--json")

    records = under_load(clients, closers, operate, LOAD_SECONDS)
    add, remove = outcome["add"], outcome["remove"]
    assert add.returncode == 0, add.stdout + add.stderr
    assert json.loads(add.stdout)["nodes"]["node3"]["added"] is True
    checked = {key: status.removesuffix(" (agent)") for key, status in outcome["servers"].items()}
    assert checked == {("webs", "node3"): "UP", ("workers", "node3"): "UP", ("worker_probes", "node3"): "UP"}
    assert len(re.findall(r"^\s+server node3 ", outcome["config"], re.MULTILINE)) == 3
    assert outcome["took_a_job"], "node3 took none of 30 rounds of 4 concurrent jobs"
    assert "node3" in outcome["cookies"], outcome["cookies"]
    assert remove.returncode == 0, remove.stdout + remove.stderr
    failed = [record for record in records if record.outcome != OK]
    assert failed == [], [(r.kind, round(r.start, 1), round(r.end, 1), r.detail) for r in failed]
    assert {record.kind for record in records} == {"rest", "gradio_client", "browser"}
    assert not [s for s in cluster.runtime.servers() if s.server == "node3"]
    assert "node3" not in sidecar_status(cluster)["nodes"]
    for pid in outcome["pids"].values():
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    last = ctl(cluster, "remove-node", "node1")  # two nodes left: removing one is fine, the last is refused
    assert last.returncode == 0, last.stderr
    # A cluster file's worker is tracked by its probe server, which HAProxy 2.8 cannot delete: left in maint.
    assert {s.status for s in cluster.runtime.servers() if s.server == "node1"} <= {"MAINT"}
    refused = ctl(cluster, "remove-node", "node2")
    assert refused.returncode == 1 and "last managed node" in refused.stderr, refused.stderr


def test_a_node_added_at_runtime_survives_an_haproxy_restart_by_the_sidecar(cluster: LaunchedCluster) -> None:
    added = ctl(cluster, "add-node", "--json", "--ready-timeout", "180")
    assert added.returncode == 0, added.stdout + added.stderr
    node = next(iter(json.loads(added.stdout)["nodes"]))
    before = sidecar_status(cluster)["haproxy"]
    assert cluster.proc is not None
    assert before["pid"] in {p.pid for p in psutil.Process(cluster.proc.pid).children(recursive=True)}
    os.kill(before["pid"], signal.SIGKILL)  # the sidecar restarts it from its re-rendered haproxy.cfg

    def node_up() -> bool:
        try:
            mine = {s.backend: s.status.removesuffix(" (agent)") for s in cluster.runtime.servers() if s.server == node}
        except OSError:
            return False
        return mine == {"webs": "UP", "workers": "UP", "worker_probes": "UP"}

    wait_until(node_up, timeout=60, what=f"{node} UP again after HAProxy's restart")
    assert sidecar_status(cluster)["haproxy"]["restarts"] == before["restarts"] + 1
    assert takes_a_job(cluster, node)
    removed = ctl(cluster, "remove-node", node, "--settle", str(SETTLE))
    assert removed.returncode == 0, removed.stdout + removed.stderr


def takes_a_job(cluster: LaunchedCluster, node: str, rounds: int = 30) -> bool:
    """Whether ``node``'s worker takes one of a few concurrent REST jobs, in up to ``rounds`` rounds of 4
    (the stand-in's jobs are short: the other workers may take them all)."""
    return any(node in concurrent_jobs(cluster, 4) for _ in range(rounds))


def concurrent_jobs(cluster: LaunchedCluster, count: int) -> list[object]:
    """The workers that ran ``count`` concurrent REST jobs."""
    workers: list[object] = []

    def job() -> None:
        workers.append(httpx.post(cluster.public_url + "/generate", timeout=120,
                                  json={"prompt": "p", "steps": 8, "width": 512, "height": 512}).json()["worker_id"])

    threads = [threading.Thread(target=job) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(150)
    return workers
