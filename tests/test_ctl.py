"""``python -m balancer.cli`` against a real sidecar and HAProxy over stand-in nodes (``bench.harness.supervised``)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from balancer.api.basic_auth import BasicAuth
from balancer.api.routes import OperationRoutes, status_app
from balancer.cli.ctl import PASSWORD_ENV
from balancer.cli.ctl_output import format_status
from balancer.config.loading import local_nodes, parse_cluster
from balancer.haproxy.config import PART_BACKENDS
from balancer.haproxy.gate import HAProxyGate
from balancer.haproxy.runtime_protocol import ServerState
from balancer.operations.parts import replace_flag
from balancer.operations.runner import OperationError
from balancer.sidecar import Sidecar
from bench.harness.load import Poller
from bench.harness.processes import Processes, free_port
from bench.harness.supervised import SupervisedCluster
from bench.harness.waiting import wait_until
from tests.balancer_helpers import STATS_PASSWORD, cluster_data, stand_in_node, wait_status

PARTS = {("a", "web"), ("a", "worker"), ("b", "web"), ("b", "worker")}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    """Two healthy nodes, a and b, each a stand-in web front and worker, supervised and behind HAProxy."""
    with Processes("ctl") as processes, SupervisedCluster(tmp_path_factory.mktemp("ctl"), processes,
                                                          [stand_in_node("a"), stand_in_node("b")]) as supervised:
        for node, part in sorted(PARTS):
            supervised.wait_ready(node, part)
        yield supervised


def ctl(cluster: SupervisedCluster, *args: str, password: str | None = STATS_PASSWORD,
        sidecar: str | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m balancer.cli ARGS`` against the cluster's sidecar, the password in the environment."""
    env = {key: value for key, value in os.environ.items() if key != PASSWORD_ENV}
    if password is not None:
        env[PASSWORD_ENV] = password
    command = [sys.executable, "-m", "balancer.cli", *args, "--sidecar", sidecar or cluster.sidecar_url]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)


def served_by(cluster: SupervisedCluster, delay: float = 0.0) -> str:
    """Which stand-in worker answers a job sent through HAProxy's public frontend."""
    answer = httpx.get(f"{cluster.spec.public.url}/generate", params={"delay": delay}, timeout=30)
    answer.raise_for_status()
    return answer.json()["worker_id"]


class RecordingAPI:
    """Stands in for HAProxy's runtime API: records the states it is told."""

    def __init__(self) -> None:
        self.told: list[tuple[str, ServerState]] = []

    async def set_server_state(self, backend: str, server: str, state: ServerState) -> None:
        self.told.append((f"{backend}/{server}", state))


def test_an_operators_drain_wins_over_the_supervisors_ready_until_released() -> None:
    async def scenario() -> list[tuple[str, ServerState]]:
        api = RecordingAPI()
        gate = HAProxyGate(api)  # type: ignore[arg-type]
        await gate.set_state("workers", "a", "ready")
        await gate.hold("workers", "a", True)  # drain a
        await gate.set_state("workers", "a", "maint")  # it died: nothing to send to
        await gate.set_state("workers", "a", "ready")  # restarted and answering: still drained
        await gate.reapply()  # HAProxy restarted
        await gate.hold("workers", "a", False)  # ready a
        return api.told

    assert asyncio.run(scenario()) == [("workers/a", "ready"), ("workers/a", "drain"), ("workers/a", "maint"),
                                       ("workers/a", "drain"), ("workers/a", "drain"), ("workers/a", "ready")]


def test_a_parked_server_stays_in_maint_until_unparked_then_gets_its_held_state() -> None:
    async def scenario() -> list[tuple[str, ServerState]]:
        api = RecordingAPI()
        gate = HAProxyGate(api)  # type: ignore[arg-type]
        await gate.hold("webs", "a", True)  # a rolling restart drains a
        await gate.park("webs", "a", True)  # quiet: parked
        await gate.set_state("webs", "a", "maint")  # restarting
        await gate.set_state("webs", "a", "ready")  # answering again: still parked
        await gate.park("webs", "a", False)  # its sticky clients are idle: drained again
        await gate.hold("webs", "a", False)  # back in rotation
        return api.told

    assert asyncio.run(scenario()) == [("webs/a", "drain"), ("webs/a", "maint"), ("webs/a", "maint"),
                                       ("webs/a", "maint"), ("webs/a", "drain"), ("webs/a", "ready")]


def test_without_haproxy_a_drain_is_recorded_and_reported_as_not_taken(tmp_path: Path) -> None:
    spec = parse_cluster(cluster_data(tmp_path, [], [], nodes=[stand_in_node("a")]))
    sidecar = Sidecar(spec, api=None)  # nothing started: only its HTTP app is used
    app = status_app(sidecar.nodes.statuses, sidecar.metrics, sidecar.retry, BasicAuth("admin", spec.stats.password),
                     drain=sidecar.nodes.drain, view=sidecar.haproxy_view)
    with TestClient(app) as client:
        assert client.post("/drain/a").status_code == 401
        answer = client.post("/drain/a", auth=("admin", STATS_PASSWORD))
        assert answer.status_code == 502 and answer.json()["error"] == "haproxy_unavailable"
        assert answer.json()["servers"] == {"workers/a": "drain", "webs/a": "drain"}
        document = client.get("/status").json()
    assert {entry["admin"] for entry in document["nodes"]["a"].values()} == {"drain"}
    assert "queued" not in document and "server" not in document["nodes"]["a"]["worker"]
    table = format_status(document).splitlines()
    assert table[1].split()[:5] == ["a", "web", "stopped", "drain", "-"]
    assert table[-1] == "HAProxy's view (HAPROXY, ACTIVE, QUEUED) unavailable: it did not answer the sidecar."


def test_without_haproxy_a_rolling_restart_is_refused_and_none_is_reported(tmp_path: Path) -> None:
    spec = parse_cluster(cluster_data(tmp_path, [], [], nodes=[stand_in_node("a")]))
    sidecar = Sidecar(spec, api=None)  # nothing started: only its HTTP app is used
    app = status_app(sidecar.nodes.statuses, sidecar.metrics, sidecar.retry, BasicAuth("admin", spec.stats.password),
                     operations=OperationRoutes(sidecar.actions.start_rolling_restart, sidecar.actions.operation))
    with TestClient(app) as client:
        answer = client.post("/rolling-restart", json={}, auth=("admin", STATS_PASSWORD))
        assert answer.status_code == 400 and "no HAProxy runtime API" in answer.json()["detail"]
        assert client.get("/operation").status_code == 404


def assert_one_line_error(result: subprocess.CompletedProcess, exit_code: int, *words: str) -> None:
    assert result.returncode == exit_code, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert all(word in lines[0] for word in words), lines[0]


def test_status_lists_every_part(cluster: SupervisedCluster) -> None:
    machine = ctl(cluster, "status", "--json")
    assert machine.returncode == 0, machine.stderr
    document = json.loads(machine.stdout)
    parts = {(node, part): entry for node, entries in document["nodes"].items() for part, entry in entries.items()}
    assert set(parts) == PARTS
    for entry in parts.values():
        assert entry["state"] == "ready" and entry["admin"] == "ready" and entry["pid"]
        assert entry["restarts"] == 0 and entry["last_cause"] is None
        assert set(entry["server"]) == {"status", "sessions", "queued"}
    assert set(document["queued"]) == {"webs", "workers"}

    human = ctl(cluster, "status")
    assert human.returncode == 0, human.stderr
    header, *rows = human.stdout.splitlines()
    assert header.split()[:4] == ["NODE", "PART", "STATE", "ADMIN"] and "LAST CAUSE" in header
    assert {tuple(row.split()[:2]) for row in rows[:len(PARTS)]} == PARTS
    assert "queued in HAProxy: webs 0, workers 0" in human.stdout


def test_drain_lets_the_job_in_flight_finish_and_sends_new_ones_elsewhere(cluster: SupervisedCluster) -> None:
    in_flight: dict[str, object] = {}
    # Long enough to outlast two ctl commands and two waits on a loaded machine (4 s did not, twice in full runs).
    job = threading.Thread(target=lambda: in_flight.update(worker=served_by(cluster, delay=10.0)))
    job.start()
    busy = wait_until(lambda: next((s.server for s in cluster.api.servers("workers") if s.current_sessions), None),
                      "a job in flight", 10, interval=0.02)
    other = "b" if busy == "a" else "a"

    drained = ctl(cluster, "drain", busy, "--json")
    assert drained.returncode == 0, drained.stderr
    assert json.loads(drained.stdout) == {"node": busy, "admin": "drain", "haproxy_told": True,
                                          "servers": {f"webs/{busy}": "drain", f"workers/{busy}": "drain"}}
    wait_status(cluster.api, "workers", busy, "DRAIN")
    wait_status(cluster.api, "webs", busy, "DRAIN")
    status = json.loads(ctl(cluster, "status", "--json").stdout)["nodes"][busy]
    assert status["web"]["admin"] == status["worker"]["admin"] == "drain"
    assert job.is_alive() and status["worker"]["server"]["sessions"] == 1  # still at work on the drained node

    job.join(timeout=30)
    assert in_flight["worker"] == f"{busy}-worker"  # it finished where it started
    # Idle now, the drained node still gets nothing new.
    assert {served_by(cluster) for _ in range(6)} == {f"{other}-worker"}
    assert {httpx.get(f"{cluster.spec.public.url}/", timeout=10).json()["name"] for _ in range(3)} == {f"{other}-web"}

    # Its supervisor does not put it back: a restarted worker stays drained once it answers.
    before = cluster.part(busy)
    os.kill(before["pid"], signal.SIGKILL)
    cluster.wait_ready(busy, restarts=before["restarts"] + 1)
    wait_status(cluster.api, "workers", busy, "DRAIN")
    time.sleep(1.0)  # several probes later
    assert cluster.api.server("workers", busy).status == "DRAIN"
    assert f"HAProxy: workers/{busy} -> drain (operator drain)" in cluster.proc.log_path.read_text()

    readied = ctl(cluster, "ready", busy)
    assert readied.returncode == 0, readied.stderr
    assert readied.stdout.strip() == f"{busy}: ready (workers/{busy} ready, webs/{busy} ready)"
    wait_status(cluster.api, "workers", busy, "UP")
    wait_status(cluster.api, "webs", busy, "UP")
    assert cluster.part(busy)["admin"] == "ready"
    wait_until(lambda: served_by(cluster) == f"{busy}-worker", f"a job on {busy} again", 20)


def test_a_wrong_password_is_refused(cluster: SupervisedCluster) -> None:
    assert_one_line_error(ctl(cluster, "drain", "a", password="wrong"), 1, "401", "--password", PASSWORD_ENV)
    assert cluster.part("a")["admin"] == "ready" and cluster.api.server("workers", "a").status != "DRAIN"


def test_an_unknown_node_is_refused(cluster: SupervisedCluster) -> None:
    assert_one_line_error(ctl(cluster, "ready", "nope"), 1, "404", "No managed node nope")


def test_no_password_or_no_sidecar_is_a_usage_error(cluster: SupervisedCluster) -> None:
    assert_one_line_error(ctl(cluster, "drain", "a", password=None), 2, "needs the stats page's password")
    nobody = f"http://127.0.0.1:{free_port()}"
    assert_one_line_error(ctl(cluster, "status", sidecar=nobody), 2, "cannot reach the sidecar", nobody)


class StandInLoad(Poller):
    """REST jobs and web page loads through HAProxy in a thread, bounded in count and time, while
    HAProxy's view is sampled: every failed request and every moment no worker was UP is kept."""

    def __init__(self, cluster: SupervisedCluster, max_requests: int = 2000, seconds: float = 120.0) -> None:
        super().__init__(0.0, "stand-in-load")
        self.cluster = cluster
        self.max_requests = max_requests
        self.deadline = time.monotonic() + seconds
        self.client = httpx.Client(base_url=cluster.spec.public.url, timeout=30)
        self.sent = 0
        self.failures: list[str] = []
        self.workers_up_min = 2

    def poll(self) -> None:
        if self.sent >= self.max_requests or time.monotonic() > self.deadline:
            time.sleep(0.1)  # done: idle until the block ends
            return
        # A page load (sticky, by cookie) now and then; REST jobs in between, a second or so.
        path, params = ("/generate", {"delay": 0.2}) if self.sent % 5 else ("/", {})
        self.sent += 1
        try:
            self.client.get(path, params=params).raise_for_status()
        except httpx.HTTPError as exc:
            self.failures.append(f"{path}: {exc!r}")
        up = sum(server.is_up for server in self.cluster.api.servers("workers"))
        self.workers_up_min = min(self.workers_up_min, up)

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        self.client.close()


def pids(cluster: SupervisedCluster) -> dict[tuple[str, str], int]:
    return {(node, part): cluster.part(node, part)["pid"] for node, part in PARTS}


def test_rolling_restart_restarts_every_part_under_load_with_no_failed_request(cluster: SupervisedCluster) -> None:
    for node, part in PARTS:
        wait_status(cluster.api, PART_BACKENDS[part], node, "UP")
    before = pids(cluster)
    restarts = {key: cluster.part(*key)["restarts"] for key in PARTS}
    deaths = {key: cluster.part(*key)["deaths"] for key in PARTS}
    with StandInLoad(cluster) as load:
        wait_until(lambda: load.sent >= 4, "load under way", 30)
        result = ctl(cluster, "rolling-restart", "--settle", "0.5")
        sent_during = load.sent
    assert result.returncode == 0, result.stderr + result.stdout
    lines = result.stdout.splitlines()
    for node in ("a", "b"):
        assert any(f"{node}: restarted and ready after" in line for line in lines), lines
        assert any(f"{node}: back in rotation" in line for line in lines), lines
        assert any(f"{node}: its sticky clients idle after" in line for line in lines), lines
    assert lines[-1] == "rolling restart done: 2 nodes restarted"
    assert load.failures == [] and sent_during >= 10
    assert load.workers_up_min == 1  # one node out of rotation at a time, never both
    after = pids(cluster)
    assert all(after[key] != before[key] and after[key] for key in PARTS), (before, after)
    assert all(cluster.part(*key)["restarts"] == restarts[key] + 1 for key in PARTS)
    assert {key: cluster.part(*key)["deaths"] for key in PARTS} == deaths  # planned: no death counted
    report = httpx.get(f"{cluster.sidecar_url}/operation", timeout=10).json()
    assert report["state"] == "done" and report["kind"] == "rolling-restart"
    assert {node: entry["restarted"] for node, entry in report["nodes"].items()} == {"a": True, "b": True}
    assert {cluster.part(node, part)["admin"] for node, part in PARTS} == {"ready"}


def test_a_second_operation_is_refused_while_one_runs(cluster: SupervisedCluster) -> None:
    auth = ("admin", STATS_PASSWORD)
    first = httpx.post(f"{cluster.sidecar_url}/rolling-restart", json={"settle": 0.5}, auth=auth, timeout=10)
    assert first.status_code == 202, first.text
    assert_one_line_error(ctl(cluster, "rolling-restart"), 1, "409", "still running")
    report = wait_until(lambda: (r := httpx.get(f"{cluster.sidecar_url}/operation", timeout=10).json())["state"]
                        != "running" and r, "the first rolling restart to end", 120, interval=0.2)
    assert report["id"] == first.json()["id"] and report["state"] == "done", report


def test_a_node_that_does_not_come_back_in_time_stops_the_rolling_restart(cluster: SupervisedCluster) -> None:
    for node, part in PARTS:
        wait_status(cluster.api, PART_BACKENDS[part], node, "UP")
    before = pids(cluster)
    result = ctl(cluster, "rolling-restart", "--settle", "0", "--ready-timeout", "0.05", "--json")
    assert result.returncode == 3, result
    report = json.loads(result.stdout)
    assert report["state"] == "failed" and report["error"].startswith("a: did not come back within 0.05 s")
    assert "(b not restarted)" in report["error"] and "ctl: rolling restart failed: a: did not" in result.stderr
    assert pids(cluster)[("b", "worker")] == before[("b", "worker")]
    # Its supervisor brings it back, and it is in rotation again: the drain was released.
    for part in ("web", "worker"):
        wait_status(cluster.api, PART_BACKENDS[part], "a", "UP")
    assert cluster.part("a")["admin"] == "ready"


def test_a_rolling_restart_with_bad_input_is_refused(cluster: SupervisedCluster) -> None:
    assert_one_line_error(ctl(cluster, "rolling-restart", "--model", "demo"), 1, "400", "run their own command")
    assert_one_line_error(ctl(cluster, "rolling-restart", "--settle", "-1"), 1, "400", "settle")
    answer = httpx.post(f"{cluster.sidecar_url}/rolling-restart", content=b"{nope", timeout=10,
                        auth=("admin", STATS_PASSWORD))
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_body"
    assert httpx.post(f"{cluster.sidecar_url}/rolling-restart", timeout=10).status_code == 401


def test_worker_flags_are_replaced_where_they_are_or_added() -> None:
    assert replace_flag(["--model", "demo", "-t", "1"], "--model", "sdxl") == ["--model", "sdxl", "-t", "1"]
    assert replace_flag(["--lora=auto"], "--lora", "none") == ["--lora=none"]
    assert replace_flag(["--threads", "1"], "--lora", "none") == ["--threads", "1", "--lora", "none"]


@pytest.mark.parametrize("command", ["status", "drain", "ready", "rolling-restart", "add-node", "remove-node"])
def test_every_command_has_help(command: str) -> None:
    result = subprocess.run([sys.executable, "-m", "balancer.cli", command, "--help"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0
    assert result.stdout.startswith(f"usage: python -m balancer.cli {command}")
    assert "--json" in result.stdout and "--sidecar" in result.stdout


def test_a_new_node_gets_the_next_name_free_ports_and_its_gpu(tmp_path: Path) -> None:
    nodes = local_nodes(2, first_web_port=free_port(), first_worker_port=free_port(), worker_args=["--model", "demo"])
    spec = parse_cluster(cluster_data(tmp_path, [], [], nodes=nodes))
    sidecar = Sidecar(spec, api=None)
    node = sidecar.nodes.next_node(gpu=1)
    assert node.name == "node3" and node.managed
    assert node.worker is not None and node.web is not None
    assert node.worker.gpu == 1 and node.worker.args == ["--model", "demo"]
    used = {part.port for entry in spec.nodes for part in (entry.web, entry.worker) if part is not None}
    assert node.web.port not in used and node.worker.port not in used
    assert node.worker.dispatch_agent_port not in used | {node.web.port, node.worker.port, None}
    # A removed node whose servers HAProxy still holds (a worker of the cluster file: tracked) keeps its name.
    sidecar.nodes.names_in_haproxy.add("node3")
    assert sidecar.nodes.next_node(gpu=None).name == "node4"


def test_adding_or_removing_nodes_without_haproxy_or_by_copying_a_custom_command_is_refused(tmp_path: Path) -> None:
    spec = parse_cluster(cluster_data(tmp_path, [], [], nodes=[stand_in_node("a")]))
    sidecar = Sidecar(spec, api=None)
    app = status_app(sidecar.nodes.statuses, sidecar.metrics, sidecar.retry, BasicAuth("admin", spec.stats.password),
                     operations=OperationRoutes(sidecar.actions.start_rolling_restart, sidecar.actions.operation,
                                                sidecar.actions.start_add_node, sidecar.actions.start_remove_node))
    with TestClient(app) as client:
        assert client.post("/add-node", json={}).status_code == 401
        answer = client.post("/add-node", json={"gpu": -1}, auth=("admin", STATS_PASSWORD))
        assert answer.status_code == 400 and "gpu" in answer.json()["detail"]
        answer = client.post("/add-node", json={}, auth=("admin", STATS_PASSWORD))
        assert answer.status_code == 400 and "no HAProxy runtime API" in answer.json()["detail"]
        answer = client.post("/remove-node/a", json={"settle": -1}, auth=("admin", STATS_PASSWORD))
        assert answer.status_code == 400 and "settle" in answer.json()["detail"]
    with pytest.raises(OperationError, match="runs its own command"):
        sidecar.nodes.next_node(None)
