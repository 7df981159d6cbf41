"""The rendered HAProxy configuration, checked by ``haproxy -c`` and by a real HAProxy.

Real HAProxy 2.8 on loopback in front of tiny stand-in node processes (``tests.fake_node``):
routing, stickiness, the workers' FIFO queue and its 503, L7 retries when a worker dies
mid-request, health checks, the stats page's password, size cap, basic auth, rate limit.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import yaml

from balancer.config.basics import ClusterConfigError
from balancer.config.loading import load_cluster_file, parse_cluster
from balancer.haproxy.config import COOKIE_NAME, read_users_file, render_config
from balancer.haproxy.process import HAProxyError, HAProxyProcess, RuntimeAPI, validate_config, write_config
from bench.harness.processes import REPO, Processes, free_port
from bench.harness.waiting import wait_until
from tests.balancer_helpers import (
    STATS_PASSWORD,
    cluster_data,
    fake_command,
    run_concurrently,
    run_in_threads,
    send_in_order,
    start_fake,
    wait_all_up,
    wait_status,
)

JOB_SECONDS = 1.0
QUEUE_TIMEOUT = 2.0


def crypt_hash(password: str) -> str:
    """A SHA-512 crypt hash, made the way the docs tell users to (``openssl passwd -6``)."""
    return subprocess.run(
        ["openssl", "passwd", "-6", "-salt", "saltsalt", password], capture_output=True, text=True, check=True
    ).stdout.strip()


class RunningBalancer:
    """A real HAProxy for one cluster description, with a stand-in process for every node part."""

    def __init__(self, data: dict, processes: Processes, job_seconds: float = 0.0) -> None:
        self.spec = parse_cluster(data)
        self.processes = processes
        self.job_seconds = job_seconds
        write_config(render_config(self.spec), self.spec.config_path)
        self.haproxy = HAProxyProcess(self.spec.config_path, self.spec.socket_path, self.spec.run_dir / "haproxy.log")
        self.api = RuntimeAPI(self.spec.socket_path)
        self.public = self.spec.public.url
        self.procs: dict[str, subprocess.Popen] = {}

    def node(self, name: str):
        return next(node for node in self.spec.nodes if node.name == name)

    def start_part(self, name: str) -> None:
        """(Re)start the stand-in for node ``name`` (web front or worker, whichever it has)."""
        node = self.node(name)
        if node.worker is not None:
            self.procs[name] = start_fake(self.processes, name, node.worker.port, delay=self.job_seconds)
        else:
            self.procs[name] = start_fake(self.processes, name, node.web.port)


@contextmanager
def running_balancer(data: dict, job_seconds: float = 0.0) -> Iterator[RunningBalancer]:
    """Start every stand-in node and HAProxy; stop them all afterwards."""
    with Processes("haproxy-config") as processes:
        running = RunningBalancer(data, processes, job_seconds)
        for node in running.spec.nodes:
            running.start_part(node.name)
        running.haproxy.start()
        try:
            wait_all_up(running.api)
            yield running
        finally:
            running.haproxy.stop()


@pytest.fixture(scope="module")
def balancer(tmp_path_factory: pytest.TempPathFactory):
    """HAProxy in front of two stand-in web fronts and two stand-in workers (1 s jobs, 2 s queue)."""
    run_dir = tmp_path_factory.mktemp("haproxy")
    limits = {"queue_timeout": QUEUE_TIMEOUT, "max_body_bytes": 100_000}
    data = cluster_data(run_dir, ["web1", "web2"], ["w1", "w2"], limits=limits)
    with running_balancer(data, job_seconds=JOB_SECONDS) as running:
        yield running


# --- rendering and validation ---------------------------------------------------------------


@pytest.mark.parametrize("count", [1, 2, 8])
def test_config_is_valid_for_node_counts(tmp_path: Path, count: int) -> None:
    names = [f"node{i}" for i in range(1, count + 1)]
    spec = parse_cluster(cluster_data(tmp_path, names, names))
    text = render_config(spec)
    validate_config(write_config(text, spec.config_path))
    assert text.count(" maxconn 1  #") == count  # one job per worker
    assert sum(f" cookie node{i}  #" in text for i in range(1, count + 1)) == count
    assert "option httpchk" in text and "observe layer4" in text and "observe layer7" not in text
    assert spec.config_path.stat().st_mode & 0o777 == 0o600  # it holds the stats password


def test_a_run_directory_with_spaces_and_odd_characters_is_a_valid_config() -> None:
    """Every file path in haproxy.cfg (the admin socket too) is one quoted argument."""
    # A short base: a Unix socket's path is at most 107 bytes, and pytest's own temp folders can be longer.
    with tempfile.TemporaryDirectory(prefix="ph-", dir="/tmp") as base:
        run_dir = Path(base) / "odd path X&'ü"
        spec = parse_cluster(cluster_data(run_dir, ["web1"], ["w1"]))
        validate_config(write_config(render_config(spec), spec.config_path))


def test_a_worker_with_a_dispatch_agent_is_polled_by_haproxy(tmp_path: Path) -> None:
    data = cluster_data(tmp_path, [], ["a", "b"])
    data["nodes"][0]["worker"]["dispatch_agent_port"] = dispatch_agent_port = free_port()
    spec = parse_cluster(data)
    text = render_config(spec)
    validate_config(write_config(text, spec.config_path))
    server_lines = [line for line in text.splitlines() if line.strip().startswith("server ")]
    assert (f'maxconn 1 agent-check agent-port {dispatch_agent_port} agent-inter 10ms agent-send "workers/a\\n"'
            in server_lines[0])
    assert "agent-check" not in server_lines[1]
    assert "\n    nbthread 1\n" in text  # maxconn holds with one thread: docs/haproxy.md


def test_invalid_config_is_rejected_with_haproxys_reason(tmp_path: Path) -> None:
    path = write_config("frontend broken\n    bind 127.0.0.1:1\n    no-such-keyword yes\n", tmp_path / "bad.cfg")
    with pytest.raises(HAProxyError, match="no-such-keyword"):
        validate_config(path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"nodes": [{"name": "a", "web": {"port": 1}}, {"name": "a", "worker": {"port": 2}}]}, "duplicate names"),
        ({"nodes": [{"name": "bad name", "web": {"port": 1}}]}, "nodes.0.name"),
        ({"nodes": [{"name": "a"}]}, "needs a web front, a worker, or both"),
        ({"public": {"port": 8404}}, "stats.port: 8404 is already used by public"),
        ({"limits": {"queue_timeout": 0}}, "limits.queue_timeout"),
        ({"stats": {"password": ""}}, "stats.password"),
        ({"nodes": [{"name": "a", "web": {"port": 99999}}]}, "nodes.0.web.port"),
        ({"nodes": [{"name": "a", "web": {"port": 1, "dispatch_agent_port": 3}}]},
         "dispatch_agent_port is a worker setting"),
        ({"nodes": [{"name": "a", "worker": {"port": 1, "dispatch_agent_port": 2}},
                    {"name": "b", "worker": {"port": 2}}]},
         "nodes.b.worker.port: 2 is already used by nodes.a.worker.dispatch_agent_port"),
    ],
)
def test_bad_cluster_descriptions_name_the_field(change: dict, message: str) -> None:
    with pytest.raises(ClusterConfigError, match=message.replace(".", r"\.")):
        parse_cluster(change)


def test_users_file_becomes_a_userlist(tmp_path: Path) -> None:
    password_hash = crypt_hash("secret")
    users_file = tmp_path / "users"
    users_file.write_text(f"# photographers\nalice:{password_hash}\n")
    spec = parse_cluster({**cluster_data(tmp_path, ["n1"], ["n1"]), "users_file": str(users_file)})
    text = render_config(spec)
    assert f"user alice password {password_hash}" in text
    assert "http-request auth" in text
    validate_config(write_config(text, spec.config_path))

    users_file.write_text("bob:plaintext\n")
    with pytest.raises(ClusterConfigError, match="line 1"):
        read_users_file(users_file)


# --- a real HAProxy in front of stand-in nodes ----------------------------------------------


def test_stats_page_needs_the_password(balancer: RunningBalancer) -> None:
    stats = balancer.spec.stats.url
    assert httpx.get(f"{stats}/").status_code == 401
    assert httpx.get(f"{stats}/metrics").status_code == 401
    assert httpx.get(f"{stats}/", auth=("admin", "wrong")).status_code == 401
    page = httpx.get(f"{stats}/", auth=("admin", STATS_PASSWORD))
    assert page.status_code == 200 and "workers" in page.text
    metrics = httpx.get(f"{stats}/metrics", auth=("admin", STATS_PASSWORD))
    assert metrics.status_code == 200 and 'haproxy_server_status{proxy="workers",server="w1"' in metrics.text


def test_routing_headers_and_size_cap(balancer: RunningBalancer) -> None:
    page = httpx.get(f"{balancer.public}/")
    assert page.json()["name"] in ("web1", "web2")
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["x-frame-options"] == "SAMEORIGIN"
    job = httpx.get(f"{balancer.public}/generate", params={"prompt": "x"}, timeout=30)
    assert job.json()["worker_id"] in ("w1", "w2")
    too_big = httpx.post(f"{balancer.public}/generate", content=b"x" * 200_000)
    assert too_big.status_code == 413 and too_big.json()["error"] == "request_too_large"


def test_worker_probes_go_around_the_job_queue(balancer: RunningBalancer) -> None:
    probes = f"{balancer.spec.worker_queue.url}/readyz"
    # Both workers busy with a job each (maxconn 1): a probe still reaches one of them.
    with ThreadPoolExecutor(max_workers=2) as pool:
        jobs = [pool.submit(httpx.get, f"{balancer.spec.worker_queue.url}/generate", params={"prompt": "x"},
                            timeout=30) for _ in range(2)]
        wait_until(lambda: all(s.current_sessions for s in balancer.api.servers("workers")), "both workers busy")
        ready = httpx.get(probes, timeout=2 * JOB_SECONDS)
        assert ready.status_code == 200 and ready.json()["name"] in ("w1", "w2")
        assert not any(job.done() for job in jobs)  # answered while the jobs still ran
        assert all(job.result().status_code == 200 for job in jobs)
    # No worker up: HAProxy answers the probe itself with a JSON 503.
    for name in ("w1", "w2"):
        balancer.api.set_server_state("workers", name, "maint")
    try:
        down = httpx.get(probes)
        assert down.status_code == 503 and down.json()["error"] == "not_ready"
    finally:
        for name in ("w1", "w2"):
            balancer.api.set_server_state("workers", name, "ready")
            wait_status(balancer.api, "workers", name, "UP")


def test_cookie_keeps_a_browser_on_one_web_front(balancer: RunningBalancer) -> None:
    seen = set()
    for _ in range(6):
        with httpx.Client(base_url=balancer.public) as browser:
            names = {browser.get("/").json()["name"] for _ in range(20)}
            assert len(names) == 1
            assert browser.cookies[COOKIE_NAME] in names
            seen |= names
    assert seen == {"web1", "web2"}  # different clients spread


def test_session_hash_keeps_cookieless_requests_together(balancer: RunningBalancer) -> None:
    for index in range(8):
        session = f"session-{index}"
        data = httpx.get(f"{balancer.public}/gradio_api/queue/data", params={"session_hash": session}).json()["name"]
        join = httpx.post(f"{balancer.public}/gradio_api/queue/join", json={"session_hash": session, "data": []})
        heartbeat = httpx.get(f"{balancer.public}/gradio_api/heartbeat/{session}")
        assert join.json()["name"] == heartbeat.json()["name"] == data


def test_stale_cookie_of_a_node_in_maintenance_still_lands_on_one_node(balancer: RunningBalancer) -> None:
    balancer.api.set_server_state("webs", "web1", "maint")
    try:
        assert balancer.api.server("webs", "web1").status == "MAINT"
        for session in ("a", "b", "c"):
            with httpx.Client(base_url=balancer.public, cookies={COOKIE_NAME: "web1"}) as client:
                names = {
                    client.get("/").json()["name"],
                    client.get("/gradio_api/queue/data", params={"session_hash": session}).json()["name"],
                    client.post("/gradio_api/queue/join", json={"session_hash": session}).json()["name"],
                }
                assert names == {"web2"}
    finally:
        balancer.api.set_server_state("webs", "web1", "ready")
        wait_status(balancer.api, "webs", "web1", "UP")


def test_workers_take_one_job_each_and_the_queue_is_fifo(balancer: RunningBalancer) -> None:
    # 4 jobs on 2 workers: the last two wait about one job (1 s), within the queue timeout.
    url = f"{balancer.public}/generate"
    results = send_in_order(balancer.api, "workers", [lambda i=i: httpx.post(url, json={"n": i}, timeout=30)
                                                      for i in range(4)])
    assert [response.status_code for _, response in results] == [200] * 4
    first, second = results[:2], results[2:]
    assert {response.json()["worker_id"] for _, response in first} == {"w1", "w2"}  # least loaded
    assert max(end for end, _ in first) < min(end for end, _ in second)  # in order


def test_queue_wait_is_bounded_then_a_clear_503(balancer: RunningBalancer) -> None:
    # Two 3.5 s jobs hold both workers; the third would wait 3.5 s, beyond the 2 s queue timeout.
    hold, job = f"{balancer.public}/generate?delay=3.5", f"{balancer.public}/generate"
    results = run_concurrently([lambda url=url: httpx.post(url, json={}, timeout=30) for url in (hold, hold, job)], 0.1)
    assert [response.status_code for _, response in results] == [200, 200, 503]
    refused = results[-1][1].json()
    assert refused["error"] == "busy" and "within 2 s" in refused["detail"]


def test_a_job_whose_worker_dies_is_replayed_on_another(balancer: RunningBalancer) -> None:
    url = f"{balancer.public}/generate"

    def kill_w1_once_both_are_busy(index: int) -> None:
        if index == 1:
            wait_until(lambda: all(s.current_sessions for s in balancer.api.servers("workers")), "both workers busy")
            balancer.procs["w1"].kill()

    results = run_in_threads([lambda i=i: httpx.post(url, json={"n": i}, timeout=30) for i in range(2)],
                             kill_w1_once_both_are_busy)
    assert [response.status_code for _, response in results] == [200, 200]
    assert {response.json()["worker_id"] for _, response in results} == {"w2"}
    assert balancer.api.server("workers", "w1").status.startswith("DOWN")

    # Back in rotation once it answers its health checks again.
    balancer.start_part("w1")
    wait_status(balancer.api, "workers", "w1", "UP")


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory):
    """HAProxy with basic auth and a rate limit of 3 generations a minute."""
    run_dir = tmp_path_factory.mktemp("haproxy-guarded")
    password_hash = crypt_hash("secret")
    users_file = run_dir / "users"
    users_file.write_text(f"alice:{password_hash}\n")
    data = cluster_data(run_dir, ["web1"], ["w1"], users_file=str(users_file), limits={"rate_limit_per_minute": 3})
    with running_balancer(data) as running:
        yield running


def test_basic_auth_guards_the_whole_site(guarded: RunningBalancer) -> None:
    assert httpx.get(f"{guarded.public}/").status_code == 401
    assert httpx.get(f"{guarded.public}/generate?prompt=x").status_code == 401
    assert httpx.get(f"{guarded.public}/", auth=("alice", "wrong")).status_code == 401
    assert httpx.get(f"{guarded.public}/", auth=("alice", "secret")).json()["name"] == "web1"


def test_rate_limit_counts_generations_per_client(guarded: RunningBalancer) -> None:
    auth = ("alice", "secret")
    for _ in range(5):  # pages are not limited
        assert httpx.get(f"{guarded.public}/", auth=auth).status_code == 200
    statuses = [httpx.post(f"{guarded.public}/generate", json={}, auth=auth).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    limited = httpx.post(f"{guarded.public}/gradio_api/queue/join", json={"session_hash": "s"}, auth=auth)
    assert limited.status_code == 429 and limited.json()["error"] == "rate_limited"
    assert limited.headers["retry-after"] == "60"


def test_example_cluster_file_is_valid(tmp_path: Path) -> None:
    data = load_cluster_file(REPO / "assets" / "cluster.example.yaml")
    spec = parse_cluster({**data, "run_dir": str(tmp_path)})
    assert [node.name for node in spec.nodes] == ["node1", "node2"]
    validate_config(write_config(render_config(spec), spec.config_path))


def test_unreadable_cluster_file_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ClusterConfigError, match="cannot read cluster file"):
        load_cluster_file(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("nodes: [\n")
    with pytest.raises(ClusterConfigError, match="not valid YAML"):
        load_cluster_file(tmp_path / "bad.yaml")


def test_haproxy_that_cannot_start_says_why(tmp_path: Path) -> None:
    spec = parse_cluster(cluster_data(tmp_path, ["n1"], ["n1"]))
    write_config(render_config(spec), spec.config_path)
    haproxy = HAProxyProcess(spec.config_path, spec.socket_path, tmp_path / "haproxy.log")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", spec.public.port))
        taken.listen()
        with pytest.raises(HAProxyError, match=f"cannot bind socket .*:{spec.public.port}"):
            haproxy.start()
    assert not haproxy.alive()


def test_launch_exits_2_with_haproxys_alerts_when_it_cannot_start(tmp_path: Path) -> None:
    port = free_port()
    data = cluster_data(tmp_path / "run", [], [], nodes=[
        {"name": "a", "worker": {"port": port, "command": fake_command("a-worker", port)}}])
    cluster_file = tmp_path / "cluster.yaml"
    cluster_file.write_text(yaml.safe_dump(data))
    public_port = parse_cluster(data).public.port
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", public_port))
        taken.listen()
        result = subprocess.run([sys.executable, "launch.py", "--cluster", str(cluster_file)], cwd=REPO,
                                capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "cannot bind socket" in result.stderr and f":{public_port}" in result.stderr
    assert "URL:" not in result.stdout  # nothing announced
    assert not (tmp_path / "run" / "logs" / "a-worker.log").exists()  # no node started


def test_streamed_chunks_are_sent_at_once(tmp_path) -> None:
    """``option http-no-delay`` in the defaults (``bench.stream`` measures it by taking exactly this line out)."""
    from bench.stream import NO_DELAY, parse_args

    config = render_config(parse_cluster({"run_dir": str(tmp_path)}))
    defaults = config.split("\ndefaults\n", 1)[1].split("\n\n", 1)[0] + "\n"
    assert NO_DELAY in defaults and config.count(NO_DELAY) == 1
    assert parse_args(["--requests", "3"]).requests == 3
