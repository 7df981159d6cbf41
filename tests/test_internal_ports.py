"""The cluster's inside is for the cluster only (issue 18, round 2), shown on real processes (``launch.py``,
two nodes on the fixed-latency stand-in: the subject is the edge, not the model):

- a held Gradio heartbeat with a forged persistence cookie no longer holds a drained node, so a rolling
  restart goes through; a real job in flight on the drained web front still holds it;
- a worker's own port and the worker queue refuse a job without the cluster secret (JSON 403), while the
  cluster serves through HAProxy and probes stay open;
- the sidecar answers ``/status`` for its own names only (421 for a foreign Host);
- the stats password comes from the environment or a file, never a flag that ``ps`` shows.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
import pytest

from balancer.cli.ctl import PASSWORD_ENV
from bench.harness.browser_client import BrowserProtocolClient
from bench.harness.generation import Job
from bench.harness.launched_cluster import LaunchedCluster
from bench.harness.processes import Processes, free_port
from bench.harness.waiting import wait_http, wait_until
from tests.suite_cluster import suite_options
from webui.contract import PERSISTENCE_COOKIE, READY_PATH, TRAFFIC_PATH

JOB_SECONDS = 3.0
"""The stand-in's fixed time per job: long enough to be seen in flight while a drain waits 1 s."""
JOB = {"prompt": "internal ports", "steps": 2, "width": 64, "height": 64, "seed": 3}
STOP_GRACE = 1
"""The sidecar's SIGTERM-to-SIGKILL grace: the forged heartbeat holds node1's web front until it (uvicorn waits
for the open stream), while nothing else here needs more than a second to stop."""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LaunchedCluster]:
    options = suite_options(model=f"standin:{JOB_SECONDS:g}", nodes=2, threads=1, start_timeout=240,
                            sidecar={"probe_interval": 0.5, "stop_grace": STOP_GRACE},
                            extra={"health": {"down_interval": 0.25},  # a restarted node is UP sooner
                                   "jobs": {"web_fronts": False}})  # a rolling restart waits on sticky clients
    with Processes("internal-ports") as processes:
        with LaunchedCluster(options, name="internal-ports", processes=processes,
                             run_dir=tmp_path_factory.mktemp("internal-ports")) as launched:
            yield launched


def ctl(cluster: LaunchedCluster, *args: str) -> subprocess.CompletedProcess:
    """``python -m balancer.cli ARGS`` against the cluster's sidecar, the password in the environment."""
    env = {**os.environ, PASSWORD_ENV: cluster.spec.stats.password.get_secret_value()}
    return subprocess.run([sys.executable, "-m", "balancer.cli", *args, "--sidecar", cluster.sidecar_url],
                          capture_output=True, text=True, env=env, timeout=240)


@contextlib.contextmanager
def held_heartbeat(cluster: LaunchedCluster, node: str) -> Iterator[None]:
    """A Gradio heartbeat stream held open through HAProxy with a forged cookie naming ``node``."""
    opened, stop = threading.Event(), threading.Event()

    def hold() -> None:
        with contextlib.suppress(httpx.HTTPError), httpx.Client(timeout=None) as client, client.stream(
                "GET", f"{cluster.public_url}/gradio_api/heartbeat/outsider",
                headers={"Cookie": f"{PERSISTENCE_COOKIE}={node}"}) as response:
            for _ in response.iter_bytes():
                opened.set()
                if stop.is_set():
                    return

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    assert opened.wait(30), "the heartbeat stream did not open"
    try:
        yield
    finally:
        stop.set()  # the stream ends at its next heartbeat, or when the restarted node closes it


def test_a_forged_cookie_heartbeat_does_not_hold_a_rolling_restart(cluster: LaunchedCluster) -> None:
    cluster.wait_all_ready(120)
    with held_heartbeat(cluster, "node1"):
        restart = ctl(cluster, "rolling-restart", "--drain-timeout", "20", "--settle", "0.2")
    assert restart.returncode == 0, restart.stdout + restart.stderr
    cluster.wait_all_ready(120)
    assert httpx.post(f"{cluster.public_url}/generate", json=JOB, timeout=60).status_code == 200


def test_a_job_in_flight_on_the_drained_web_front_still_holds_the_drain(cluster: LaunchedCluster) -> None:
    cluster.wait_all_ready(120)
    page = BrowserProtocolClient(cluster.public_url, api_name="generate")
    page.open()
    page.http.cookies.clear()
    page.http.cookies.set(PERSISTENCE_COOKIE, "node1")  # this page's node: node1
    done: dict[str, object] = {}
    job = threading.Thread(target=lambda: done.update(reply=page.generate(Job("held", 2, 64, 64, seed=4))))
    job.start()
    web1 = cluster.part_url("node1", "web")
    wait_until(lambda: httpx.get(web1 + TRAFFIC_PATH, timeout=5).json()["in_flight"] >= 1, "the job on node1", 30,
               interval=0.05)
    auth = ("admin", cluster.spec.stats.password.get_secret_value())
    started = httpx.post(f"{cluster.sidecar_url}/rolling-restart", json={"drain_timeout": 1, "settle": 0.2},
                         auth=auth, timeout=10)
    assert started.status_code == 202, started.text
    report = wait_until(lambda: (r := httpx.get(f"{cluster.sidecar_url}/operation", timeout=5).json())["state"]
                        != "running" and r, "the rolling restart's end", 60, interval=0.1)
    job.join(60)
    assert report["state"] == "failed" and report["error"].startswith("node1: still serving requests"), report
    assert not report["nodes"]["node1"]["restarted"] and "reply" in done  # and the job got its image


def busy_node(cluster: LaunchedCluster) -> str | None:
    """The node whose worker runs a job now, if any (its ``/readyz``)."""
    return next((node for node in cluster.node_names
                 if httpx.get(cluster.part_url(node, "worker") + READY_PATH, timeout=10).json().get("busy")), None)


def test_node_ports_and_the_worker_queue_refuse_strangers_without_the_cluster_secret(cluster: LaunchedCluster) -> None:
    cluster.wait_all_ready(120)
    worker, queue = cluster.part_url("node2", "worker"), cluster.spec.worker_queue.url
    for url in (worker, queue):
        refused = httpx.post(f"{url}/generate", json=JOB, timeout=30)
        assert refused.status_code == 403 and refused.json()["error"] == "not_a_cluster_part", (url, refused.text)
        forged = httpx.post(f"{url}/generate", json=JOB, headers={"X-Portrait-Cluster": "guess"}, timeout=30)
        assert forged.status_code == 403, url
        assert httpx.get(url + READY_PATH, timeout=10).status_code == 200  # probes stay open
    with ThreadPoolExecutor(1) as pool:  # the cluster through HAProxy and a worker itself, with the secret, at once
        through_haproxy = pool.submit(lambda: httpx.post(f"{cluster.public_url}/generate", json=JOB, timeout=60))
        busy = wait_until(lambda: busy_node(cluster), "HAProxy's job running", timeout=30, interval=0.05)
        other = cluster.part_url(next(node for node in cluster.node_names if node != busy), "worker")
        direct = httpx.post(f"{other}/generate", json=JOB, headers=cluster.internal_headers, timeout=60)
        assert [direct.status_code, through_haproxy.result().status_code] == [200, 200]
    # A web front's own port too: its page and its queue go around the site's login and limits.
    web = cluster.part_url("node2", "web")
    for path in ("/", "/config"):
        refused = httpx.get(web + path, timeout=30)
        assert refused.status_code == 403 and refused.json()["error"] == "not_a_cluster_part", (path, refused.text)
        assert httpx.get(web + path, headers=cluster.internal_headers, timeout=30).status_code == 200
    assert httpx.get(web + READY_PATH, timeout=10).status_code == 200
    assert httpx.get(cluster.public_url + "/config", timeout=30).status_code == 200  # HAProxy shows the secret
    secret = cluster.run_dir / "cluster.secret"
    assert secret.stat().st_mode & 0o777 == 0o600
    assert not any(secret.read_text().strip() in " ".join(p.cmdline()) for p in cluster.process_tree())


def test_the_sidecar_answers_its_own_names_only(cluster: LaunchedCluster) -> None:
    assert httpx.get(f"{cluster.sidecar_url}/status", timeout=10).status_code == 200
    foreign = httpx.get(f"{cluster.sidecar_url}/status", headers={"Host": "attacker.example"}, timeout=10)
    assert foreign.status_code == 421 and foreign.json()["error"] == "unknown_host"


def test_the_stats_password_comes_from_the_environment_and_never_shows_in_ps(tmp_path: Path) -> None:
    password = "env-only-" + os.urandom(6).hex()
    ports = {flag: free_port() for flag in ("--port", "--worker-queue-port", "--stats-port", "--sidecar-port")}
    args = ["python", "launch.py", "--role", "balancer", "--nodes", "0", "--run-dir", str(tmp_path / "run"),
            *(str(item) for pair in ports.items() for item in pair)]
    refused = subprocess.run([sys.executable, *args[1:], "--stats-password", password], capture_output=True,
                             text=True, timeout=60)
    assert refused.returncode == 2 and "PORTRAIT_STATS_PASSWORD" in refused.stderr
    with Processes("stats-password") as processes:
        launch = processes.start(args, env={"PORTRAIT_STATS_PASSWORD": password}, log_name="stats-password")
        wait_http(f"http://127.0.0.1:{ports['--sidecar-port']}/healthz", timeout=60, proc=launch)
        stats = f"http://127.0.0.1:{ports['--stats-port']}/"
        wait_http(stats, timeout=30, proc=launch, auth=("admin", password))  # HAProxy may bind it after /healthz
        assert httpx.get(stats, auth=("admin", "wrong"), timeout=5).status_code == 401
        tree = [psutil.Process(launch.pid), *psutil.Process(launch.pid).children(recursive=True)]
        assert len(tree) >= 2 and not any(password in " ".join(p.cmdline()) for p in tree)
