"""The sidecar: restart policy, death causes, and the real supervisor with a real HAProxy.

The supervised processes here are stand-ins (``tests.fake_node``, given as each part's
``command``) so that deaths, crash loops and stuck processes are quick to produce; the
cluster tests do the same with real workers and web fronts.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest
import yaml

from balancer.config.loading import parse_cluster
from balancer.haproxy.config import PROBES_BACKEND
from balancer.haproxy.process import RuntimeAPI
from balancer.haproxy.runtime_api import AsyncRuntimeAPI
from balancer.haproxy.runtime_protocol import RuntimeAPIError
from balancer.supervision.causes import (
    Death,
    DeathCause,
    DeathClassifier,
    KernelLog,
    OomKillCounter,
    candidate_counter_files,
)
from balancer.supervision.restart_policy import RestartPolicy
from balancer.system.run_dir import prepare_run_dir
from bench.harness.balancer import running_haproxy
from bench.harness.processes import Processes, free_port
from bench.harness.supervised import SupervisedCluster
from bench.harness.waiting import wait_http, wait_until
from tests.balancer_helpers import STATS_PASSWORD, cluster_data, fake_command, stand_in_node, start_fake, wait_status
from tests.helpers import FakeClock
from webui.contract import EXIT_LOAD_FAILED, EXIT_OOM

# --- restart policy -------------------------------------------------------------------------


def test_restart_policy_is_immediate_then_exponential_then_gives_up() -> None:
    clock = FakeClock()
    policy = RestartPolicy(backoff_initial=1, backoff_max=5, crash_loop_deaths=6, crash_loop_window=60, clock=clock)
    delays = []
    for _ in range(5):
        policy.record_death()
        delays.append(policy.next_delay())
        assert not policy.crash_looping()
        clock.now += 1
    assert delays == [0, 1, 2, 4, 5]
    policy.record_death()
    assert policy.crash_looping()


def test_restart_policy_forgets_old_deaths() -> None:
    clock = FakeClock()
    policy = RestartPolicy(backoff_initial=1, backoff_max=60, crash_loop_deaths=3, crash_loop_window=60, clock=clock)
    policy.record_death()
    clock.now += 30
    policy.record_death()
    assert policy.next_delay() == 1
    clock.now += 61  # both deaths are out of the window: a fresh start
    policy.record_death()
    assert policy.next_delay() == 0 and not policy.crash_looping()


# --- causes of death ------------------------------------------------------------------------


def classify(classifier: DeathClassifier, returncode: int, pid: int, oom_baseline: int | None) -> Death:
    """``DeathClassifier.classify`` (a coroutine: it reads the kernel log in a thread), run to its end."""
    return asyncio.run(classifier.classify(returncode, pid=pid, oom_baseline=oom_baseline))


@pytest.fixture
def counter_file(tmp_path: Path) -> Path:
    path = tmp_path / "memory.events"
    path.write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    return path


@pytest.mark.parametrize(
    ("returncode", "cause", "detail"),
    [
        (EXIT_OOM, DeathCause.OOM_EXIT, "EXIT_OOM"),
        (EXIT_LOAD_FAILED, DeathCause.LOAD_FAILED, "EXIT_LOAD_FAILED"),
        (-signal.SIGKILL, DeathCause.SIGNAL, "SIGKILL"),
        (-signal.SIGSEGV, DeathCause.SIGNAL, "SIGSEGV"),
        (1, DeathCause.CRASH, "code 1"),
        (0, DeathCause.EXIT, "code 0"),
    ],
)
def test_exit_statuses_are_classified(counter_file: Path, returncode: int, cause: DeathCause, detail: str) -> None:
    classifier = DeathClassifier(OomKillCounter(counter_file), KernelLog(counter_file.parent / "no-kmsg"))
    death = classify(classifier, returncode, pid=4242, oom_baseline=classifier.baseline())
    assert death.cause is cause and detail in death.detail


def test_sigkill_after_the_cgroup_oom_counter_grew_is_the_oom_killer(counter_file: Path) -> None:
    classifier = DeathClassifier(OomKillCounter(counter_file), KernelLog(counter_file.parent / "no-kmsg"))
    baseline = classifier.baseline()
    assert baseline == 1
    counter_file.write_text("oom 2\noom_kill 2\n")
    death = classify(classifier, -signal.SIGKILL, pid=4242, oom_baseline=baseline)
    assert death.cause is DeathCause.OOM_KILLER and "oom_kill 1 -> 2" in death.detail
    # Another signal is not the OOM killer, whatever the counter says.
    assert classify(classifier, -signal.SIGTERM, pid=4243, oom_baseline=baseline).cause is DeathCause.SIGNAL
    # One OOM kill explains one death: a later SIGKILL (of a process started before it) is not one.
    assert classify(classifier, -signal.SIGKILL, pid=4244, oom_baseline=baseline).cause is DeathCause.SIGNAL
    # Nor is the SIGKILL of a process started after the kill.
    assert classify(classifier, -signal.SIGKILL, pid=4245, oom_baseline=2).cause is DeathCause.SIGNAL


def test_sigkill_named_in_the_kernel_log_is_the_oom_killer(tmp_path: Path) -> None:
    kmsg = tmp_path / "kmsg"
    kmsg.write_text("6,100,5,-;Memory cgroup out of memory: Killed process 4242 (python) total-vm:1kB\n")
    classifier = DeathClassifier(OomKillCounter(None), KernelLog(kmsg))
    assert classify(classifier, -signal.SIGKILL, pid=4242, oom_baseline=None).cause is DeathCause.OOM_KILLER
    assert classify(classifier, -signal.SIGKILL, pid=4243, oom_baseline=None).cause is DeathCause.SIGNAL


def test_cgroup_counter_files_are_found_for_v1_and_v2(tmp_path: Path) -> None:
    proc_cgroup = tmp_path / "cgroup"
    proc_cgroup.write_text("4:memory:/jobs/a\n0::/user.slice/b\n")
    names = [str(path) for path in candidate_counter_files(proc_cgroup)]
    assert names == [
        "/sys/fs/cgroup/memory/jobs/a/memory.oom_control",
        "/sys/fs/cgroup/memory/memory.oom_control",
        "/sys/fs/cgroup/user.slice/b/memory.events",
        "/sys/fs/cgroup/memory.events",
    ]


# --- the sidecar process, supervising stand-in nodes behind a real HAProxy -------------------


def hog_file(run_dir: Path) -> Path:
    """Writing seconds here makes b's worker spin holding the GIL that long (``tests.fake_node --hog-file``)."""
    return run_dir / "b-worker-hog"


def troubled_nodes(run_dir: Path) -> list[dict]:
    """a, healthy; b, out of memory once (exit code EXIT_OOM), then up (and hogs the CPU when asked);
    c, always crashing soon after it starts."""
    return [
        stand_in_node("a"),
        stand_in_node("b", ("worker",), "--exit-code", str(EXIT_OOM), "--exit-after", "0.5",
                      "--once-file", str(run_dir / "b-crashed-once"), "--hog-file", str(hog_file(run_dir))),
        stand_in_node("c", ("worker",), "--exit-code", "3", "--exit-after", "0.3"),
    ]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    run_dir = tmp_path_factory.mktemp("sidecar")
    with Processes("sidecar") as processes, \
            SupervisedCluster(run_dir, processes, troubled_nodes(run_dir)) as supervised:
        supervised.wait_ready("a", "worker")
        supervised.wait_ready("a", "web")
        yield supervised


def test_started_parts_are_ready_and_in_rotation(cluster: SupervisedCluster) -> None:
    entry = cluster.part("a")
    assert entry["pid"] and psutil.pid_exists(entry["pid"]) and entry["uptime"] > 0
    wait_status(cluster.api, "workers", "a", "UP")
    wait_status(cluster.api, "webs", "a", "UP")


def test_the_async_runtime_client_reads_haproxy_as_the_blocking_one_does(cluster: SupervisedCluster) -> None:
    async def read() -> tuple[bool, list]:
        api = AsyncRuntimeAPI(cluster.spec.socket_path)
        return await api.ping(), await api.servers("workers")

    wait_status(cluster.api, "workers", "a", "UP")
    before = cluster.api.server("workers", "a").status
    answers, servers = asyncio.run(read())
    after = cluster.api.server("workers", "a").status
    assert answers
    # Weights ramp (slowstart), c comes and goes, and a check may be under way (UP 1/2): compare
    # what holds still, and a's status with the blocking client's reads just before and after.
    assert [(s.backend, s.server) for s in servers] == [(s.backend, s.server) for s in cluster.api.servers("workers")]
    assert next(s for s in servers if s.server == "a").status in {before, after}


def test_oom_exit_is_restarted_and_recorded(cluster: SupervisedCluster) -> None:
    entry = cluster.wait_ready("b", restarts=1)
    assert entry["last_cause"] == "oom_exit" and entry["last_returncode"] == EXIT_OOM
    assert entry["deaths"] == {"oom_exit": 1}
    wait_status(cluster.api, "workers", "b", "UP")


def test_crash_loop_leaves_the_node_in_maint_and_says_so(cluster: SupervisedCluster) -> None:
    entry = cluster.wait_part("c", "worker", "crash loop", lambda e: e["crash_looped"])
    assert entry["state"] == "crash_loop" and entry["pid"] is None
    assert entry["deaths"] == {"crash": 4} and entry["restarts"] == 3
    assert cluster.status()["crash_looped"] == ["c/worker"]
    assert cluster.api.server("workers", "c").status == "MAINT"
    metrics = httpx.get(f"{cluster.sidecar_url}/metrics").text
    assert 'portrait_sidecar_crash_looped{node="c",part="worker"} 1.0' in metrics
    assert 'portrait_sidecar_deaths_total{cause="crash",node="c",part="worker"} 4.0' in metrics
    log = cluster.proc.log_path.read_text()
    assert "CRASH LOOP" in log
    assert f"retry it: curl -u admin:STATS_PASSWORD -X POST {cluster.sidecar_url}/retry/c/worker" in log
    # The others keep serving.
    served = {httpx.get(f"{cluster.spec.public.url}/generate", timeout=10).json()["worker_id"] for _ in range(6)}
    assert served and served <= {"a-worker", "b-worker"}


@pytest.mark.parametrize(
    "authorization",
    [None, ("admin", "wrong-password"), ("intruder", STATS_PASSWORD), "Basic not-base64!", "Bearer token"],
    ids=["none", "wrong-password", "wrong-user", "malformed", "not-basic"],
)
def test_retry_needs_the_stats_user_and_password(cluster: SupervisedCluster, authorization) -> None:
    cluster.wait_part("c", "worker", "crash loop", lambda e: e["crash_looped"])
    if isinstance(authorization, str):
        answer = httpx.post(f"{cluster.sidecar_url}/retry/c/worker", headers={"Authorization": authorization})
    else:
        answer = httpx.post(f"{cluster.sidecar_url}/retry/c/worker", auth=authorization)
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"] == 'Basic realm="portrait-ha sidecar"'
    assert answer.json()["error"] == "unauthorized" and answer.json()["fields"] == []
    assert cluster.part("c")["crash_looped"]  # not retried
    assert httpx.get(f"{cluster.sidecar_url}/status").status_code == 200  # reading needs no password


def test_an_operator_can_retry_a_crash_looped_part(cluster: SupervisedCluster) -> None:
    looped = cluster.wait_part("c", "worker", "crash loop", lambda e: e["crash_looped"])
    retry = f"{cluster.sidecar_url}/retry"
    auth = (cluster.spec.stats.user, STATS_PASSWORD)
    assert httpx.post(f"{retry}/a/worker", auth=auth).status_code == 409  # not crash-looped: nothing to retry
    assert httpx.post(f"{retry}/nope/worker", auth=auth).status_code == 404
    assert httpx.post(f"{retry}/c/worker", auth=auth).status_code == 202
    # Started afresh with a clean slate; its cause is not fixed, so it crash-loops again after
    # another full round of deaths (restarts: the retry itself plus three more).
    again = cluster.wait_part("c", "worker", "second crash loop",
                              lambda e: e["crash_looped"] and e["deaths"]["crash"] == 8, timeout=60)
    assert again["restarts"] == looped["restarts"] + 4
    assert cluster.api.server("workers", "c").status == "MAINT"
    assert "retrying after a crash loop" in cluster.proc.log_path.read_text()


def test_sigkill_is_restarted_maint_first_and_recorded_as_a_signal(cluster: SupervisedCluster) -> None:
    before = cluster.wait_ready("a")
    os.kill(before["pid"], signal.SIGKILL)
    after = cluster.wait_ready("a", restarts=before["restarts"] + 1)
    assert after["pid"] != before["pid"]
    assert after["last_cause"] == "signal" and "SIGKILL" in after["last_detail"]
    # HAProxy was told first (maint), before anything else about the death; ready only once it answered.
    log = cluster.proc.log_path.read_text().splitlines()
    died = max(i for i, line in enumerate(log) if "a/worker: died (signal)" in line)
    assert "HAProxy: workers/a -> maint" in log[died - 1]
    assert any("HAProxy: workers/a -> ready" in line for line in log[died:])
    wait_status(cluster.api, "workers", "a", "UP")
    assert httpx.get(f"{cluster.part('a')['url']}/generate").json()["worker_id"] == "a-worker"


def test_sigkill_by_the_oom_killer_is_told_apart(cluster: SupervisedCluster) -> None:
    before = cluster.wait_ready("a")
    # What the kernel does: bump the cgroup's oom_kill counter and SIGKILL the process.
    cluster.oom_counter.write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 1\n")
    os.kill(before["pid"], signal.SIGKILL)
    after = cluster.wait_ready("a", restarts=before["restarts"] + 1)
    assert after["last_cause"] == "oom_killer" and "oom_kill 0 -> 1" in after["last_detail"]
    assert after["deaths"]["oom_killer"] == 1


def test_a_frozen_worker_is_killed_as_hung_within_seconds(cluster: SupervisedCluster) -> None:
    before = cluster.wait_ready("a")
    stopped_at = time.monotonic()
    os.kill(before["pid"], signal.SIGSTOP)  # alive, answers nothing, uses no CPU
    try:
        after = cluster.wait_ready("a", restarts=before["restarts"] + 1)
    finally:
        if psutil.pid_exists(before["pid"]):
            os.kill(before["pid"], signal.SIGKILL)
    assert after["last_cause"] == "hung", after["last_detail"]
    assert "no answer to" in after["last_detail"] and "process state stopped" in after["last_detail"]
    assert after["deaths"].get("stuck") is None
    assert "CPU-s used and no thread runnable" in after["last_detail"]
    # Killed on the evidence, not after stuck_after (4 s): restarted and ready again (a stand-in starts fast).
    assert time.monotonic() - stopped_at < cluster.spec.sidecar.stuck_after + 5
    assert not psutil.pid_exists(before["pid"]) or psutil.Process(before["pid"]).status() == psutil.STATUS_ZOMBIE
    metrics = httpx.get(f"{cluster.sidecar_url}/metrics").text
    assert 'portrait_sidecar_deaths_total{cause="hung",node="a",part="worker"} 1.0' in metrics


def test_a_busy_worker_that_does_not_answer_is_not_hung_but_stuck(cluster: SupervisedCluster) -> None:
    before = cluster.wait_ready("b", restarts=1)  # after its one OOM exit
    asked = hog_file(cluster.run_dir).with_suffix(".part")
    asked.write_text("12")
    asked.replace(hog_file(cluster.run_dir))  # whole: b's worker spins 12 s holding the GIL
    cluster.wait_part("b", "worker", "unready", lambda e: e["state"] == "unready", timeout=10)
    after = cluster.wait_ready("b", restarts=before["restarts"] + 1, timeout=30)
    assert after["last_cause"] == "stuck", after["last_detail"]
    assert "hung" not in after["deaths"]
    log = cluster.proc.log_path.read_text()
    assert "b/worker: no answer to its probe for" in log and "slow or CPU-starved, not hung" in log


def test_sigterm_drains_and_stops_every_child(cluster: SupervisedCluster) -> None:
    sidecar = psutil.Process(cluster.proc.pid)
    children = sidecar.children(recursive=True)
    assert len(children) == 3  # a web, a worker, b worker (c crash-looped)
    cluster.proc.send_signal(signal.SIGTERM)
    assert cluster.proc.wait(timeout=20) == 0
    gone, alive = psutil.wait_procs(children, timeout=5)
    assert not alive
    states = {(server.backend, server.server): server.status for server in cluster.api.servers()}
    probes = {key: states.pop(key) for key in list(states) if key[0] == PROBES_BACKEND}
    assert set(states.values()) == {"MAINT"}
    assert probes and all(status == f"MAINT (via workers/{server})" for (_, server), status in probes.items())
    assert "all processes stopped" in cluster.proc.log_path.read_text()


def test_children_do_not_outlive_a_sigkilled_sidecar(tmp_path: Path, processes: Processes) -> None:
    port = free_port()
    cluster_file = tmp_path / "cluster.yaml"
    cluster_file.write_text(yaml.safe_dump({
        "run_dir": str(tmp_path),
        "sidecar": {"port": free_port(), "probe_interval": 0.2},
        "nodes": [{"name": "a", "worker": {"port": port, "command": fake_command("a-worker", port)}}],
    }))
    sidecar = processes.start(["python", "-m", "balancer.sidecar", "--no-haproxy", "--cluster", str(cluster_file)],
                              log_name="sidecar-killed")
    wait_http(f"http://127.0.0.1:{port}/readyz", proc=sidecar, timeout=30)
    children = psutil.Process(sidecar.pid).children(recursive=True)
    assert children
    sidecar.kill()
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, f"orphans left behind: {[proc.pid for proc in alive]}"


# --- HAProxy under the sidecar (launch.py); a sidecar whose HAProxy stops answering ----------


def test_haproxy_killed_under_launch_is_restarted_and_told_the_servers_states(tmp_path: Path,
                                                                             processes: Processes) -> None:
    ports = {name: free_port() for name in ("a-worker", "c-worker")}
    data = cluster_data(
        tmp_path / "run", [], [],
        sidecar={"port": free_port(), "probe_interval": 0.2, "backoff_initial": 0.2, "crash_loop_deaths": 2,
                 "stop_grace": 3.0},
        nodes=[
            {"name": "a", "worker": {"port": ports["a-worker"],
                                     "command": fake_command("a-worker", ports["a-worker"])}},
            # Crash-loops at once: the sidecar holds its server in maint.
            {"name": "c", "worker": {"port": ports["c-worker"], "command": fake_command(
                "c-worker", ports["c-worker"], "--exit-code", "3", "--exit-after", "0.2")}},
        ],
    )
    cluster_file = tmp_path / "cluster.yaml"
    cluster_file.write_text(yaml.safe_dump(data))
    spec = parse_cluster(data)
    api = RuntimeAPI(spec.socket_path)
    launch = processes.start(["python", "launch.py", "--cluster", str(cluster_file)], log_name="launch-haproxy-kill")
    status_url = f"{spec.sidecar.url}/status"
    wait_http(status_url, proc=launch, timeout=60)
    wait_until(lambda: httpx.get(status_url).json()["crash_looped"] == ["c/worker"], "c/worker crash-looped", 30)
    wait_status(api, "workers", "a", "UP")
    assert api.server("workers", "c").status == "MAINT"
    before = httpx.get(status_url).json()["haproxy"]
    assert before["state"] == "ready" and before["restarts"] == 0

    os.kill(before["pid"], signal.SIGKILL)
    after = wait_until(lambda: (entry := httpx.get(status_url).json()["haproxy"])["restarts"] == 1
                       and entry["state"] == "ready" and entry, "HAProxy restarted", 30)
    assert after["pid"] not in (None, before["pid"]) and psutil.pid_exists(after["pid"])
    assert after["last_cause"] == "signal" and "SIGKILL" in after["last_detail"]
    # A fresh HAProxy starts every server out ready; the sidecar put c back in maint (a dead server
    # left to the health checks would be DOWN, never MAINT) and a back in rotation.
    wait_status(api, "workers", "c", "MAINT", timeout=5)
    wait_status(api, "workers", "a", "UP")
    metrics = httpx.get(f"{spec.sidecar.url}/metrics").text
    assert 'portrait_sidecar_restarts_total{node="balancer",part="haproxy"} 1.0' in metrics
    assert 'portrait_sidecar_deaths_total{cause="signal",node="balancer",part="haproxy"} 1.0' in metrics

    # One signal owner: SIGTERM drains and stops the nodes, then HAProxy; launch.py exits 0, nothing left.
    children = psutil.Process(launch.pid).children(recursive=True)
    launch.send_signal(signal.SIGTERM)
    assert launch.wait(timeout=30) == 0
    gone, alive = psutil.wait_procs(children, timeout=5)
    assert not alive, f"left running: {alive}"
    log = launch.log_path.read_text().splitlines()
    stopped = next(i for i, line in enumerate(log) if "HAProxy stopped" in line)
    assert max(i for i, line in enumerate(log) if "HAProxy: workers/a -> maint" in line) < stopped
    assert "HAProxy exited unexpectedly" not in "\n".join(log)  # no second watchdog


class SilentSocket:
    """A UNIX socket that accepts connections and never answers: an HAProxy that hangs."""

    def __init__(self, path: Path) -> None:
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.listener.listen(64)
        self.accepted: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                self.accepted.append(self.listener.accept()[0])
            except OSError:
                return

    def __enter__(self) -> SilentSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        for conn in self.accepted:
            conn.close()


def test_the_async_runtime_client_gives_up_on_a_silent_socket(tmp_path: Path) -> None:
    with SilentSocket(tmp_path / "haproxy.sock"):
        api = AsyncRuntimeAPI(tmp_path / "haproxy.sock", timeout=0.3)
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            asyncio.run(api.command("show info"))
        assert time.monotonic() - start < 2
        assert asyncio.run(api.ping()) is False


COMMAND_TIMEOUT = 2.5
"""The sidecar's ``haproxy_command_timeout`` against the silent HAProxy: a blocked loop would show it."""


def test_the_sidecars_loop_is_not_blocked_while_haproxy_does_not_answer(tmp_path: Path,
                                                                      processes: Processes) -> None:
    run_dir = prepare_run_dir(tmp_path / "run")
    port = free_port()
    data = {"run_dir": str(run_dir),
            "sidecar": {"port": free_port(), "probe_interval": 0.2, "haproxy_command_timeout": COMMAND_TIMEOUT},
            "nodes": [{"name": "a", "worker": {"port": port, "command": fake_command("a-worker", port)}}]}
    cluster_file = tmp_path / "cluster.yaml"
    cluster_file.write_text(yaml.safe_dump(data))
    spec = parse_cluster(data)
    status_url = f"{spec.sidecar.url}/status"
    timed_out = "could not set workers/a to maint in HAProxy: TimeoutError"
    with SilentSocket(spec.socket_path) as silent:
        sidecar = processes.start(["python", "-m", "balancer.sidecar", "--cluster", str(cluster_file)],
                                  log_name="sidecar-silent-haproxy")
        wait_until(lambda: silent.accepted or sidecar.poll() is not None, "a command to HAProxy", 30)
        wait_http(status_url, proc=sidecar, timeout=30)
        # The first command waits COMMAND_TIMEOUT for an answer that never comes; all the while the loop serves
        # (a blocked loop would hold a request for the rest of that wait: more than a second).
        latencies = []
        while timed_out not in sidecar.log_path.read_text() or len(latencies) < 5:
            start = time.monotonic()
            assert httpx.get(status_url, timeout=5).status_code == 200
            latencies.append(time.monotonic() - start)
            time.sleep(0.2)
        assert max(latencies) < 1.0, latencies
        # Supervision goes on too: the command timed out, the part starts and becomes ready.
        wait_until(lambda: httpx.get(status_url).json()["nodes"]["a"]["worker"]["state"] == "ready", "a ready", 30)


def test_a_runtime_server_is_deleted_once_its_last_request_has_ended(tmp_path: Path, processes: Processes) -> None:
    """HAProxy refuses ``del server`` while the server still has a connection (a request in flight, an idle one
    kept for reuse): ``delete_server`` asks again until it may, within its ``wait``, and fails past it."""
    data = cluster_data(prepare_run_dir(tmp_path / "run"), [], ["w1"])
    spec = parse_cluster(data)
    start_fake(processes, "w1", spec.nodes[0].worker.port)  # type: ignore[union-attr]
    slow_port = free_port()
    start_fake(processes, "slow", slow_port, delay=1.5)
    with running_haproxy(spec, tmp_path / "haproxy.log"):
        api = AsyncRuntimeAPI(spec.socket_path)
        asyncio.run(api.add_server("workers", "extra", f"127.0.0.1:{slow_port}", "maxconn 1", agent=False))
        asyncio.run(api.set_server_state("workers", "extra", "ready"))
        # Its probe server too, as the sidecar adds it: HAProxy counts the workers up there (worker_probes).
        asyncio.run(api.add_server("worker_probes", "extra", f"127.0.0.1:{slow_port}", "", agent=False))
        asyncio.run(api.set_server_state("worker_probes", "extra", "ready"))
        asyncio.run(api.set_server_state("workers", "w1", "maint"))  # the next job goes to the slow one
        results: list[httpx.Response] = []
        job = threading.Thread(target=lambda: results.append(
            httpx.post(f"{spec.public.url}/generate", json={"prompt": "x"}, timeout=30)))
        job.start()
        wait_until(lambda: any(s.server == "extra" and s.current_sessions for s in RuntimeAPI(spec.socket_path)
                               .servers("workers")), "the job on the added server", 10, 0.02)
        with pytest.raises(RuntimeAPIError, match="still has connections"):
            asyncio.run(api.delete_server("workers", "extra", wait=0))
        started = time.monotonic()
        asyncio.run(api.delete_server("workers", "extra"))
        waited = time.monotonic() - started
        job.join(timeout=30)
        assert results and results[0].status_code == 200 and results[0].json()["worker_id"] == "slow", results
        assert "extra" not in {s.server for s in RuntimeAPI(spec.socket_path).servers("workers")}
        assert waited > 0.5, waited  # it waited for the job (1.5 s) to end
