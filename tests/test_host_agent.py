"""Node states through HAProxy's agent protocol: a node host's host agent (``--node-host``) and a real HAProxy.

On loopback, with stand-in node processes (``tests.fake_node``): the balancer's HAProxy has no
runtime-API link to the node host's sidecar and learns every state from its host agent only. The same
over real network namespaces, with real workers, is in ``tests/test_hosts.py``.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from balancer.config.basics import ClusterConfigError
from balancer.config.loading import parse_cluster
from balancer.haproxy.config import render_config
from balancer.haproxy.process import HAProxyProcess, RuntimeAPI, write_config
from balancer.multihost.host_agent import (
    DISPATCH_TIMEOUT,
    GONE_DISPATCH,
    REPLIES,
    SAFE_DISPATCH,
    UNKNOWN_REPLY,
    HostAgent,
)
from bench.harness.processes import REPO, Processes, free_port
from bench.harness.waiting import wait_http, wait_until
from tests.balancer_helpers import STATS_PASSWORD, cluster_data, stand_in_node, wait_status
from tests.helpers import node_server_lines
from webui.worker.dispatch_agent import DispatchAgent

HOST = "h1"


def ask_agent(port: int, line: str) -> str:
    """What the agent answers HAProxy about ``line`` (``BACKEND/SERVER``)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(f"{line}\n".encode())
        return sock.makefile().readline().strip()


class NodeHost:
    """A balancer's HAProxy on loopback, and a node host's sidecar (``--node-host h1``) for its nodes."""

    def __init__(self, run_dir: Path, processes: Processes) -> None:
        self.host_agent_port = free_port()
        nodes = [
            {**stand_in_node("a"), "node_host": HOST},
            # Always crashing: a crash loop, so in maint for good.
            {**stand_in_node("c", ("worker",), "--exit-code", "3", "--exit-after", "0.3"), "node_host": HOST},
        ]
        data = cluster_data(
            run_dir, [], [], nodes=nodes,
            node_hosts=[{"name": HOST, "address": "127.0.0.1", "host_agent_port": self.host_agent_port}],
            health={"host_agent_interval": 0.2},
            sidecar={"port": free_port(), "probe_interval": 0.2, "backoff_initial": 0.2, "backoff_max": 0.5,
                     "crash_loop_deaths": 3, "crash_loop_window": 60, "stop_grace": 3.0},
        )
        self.spec = parse_cluster(data)
        write_config(render_config(self.spec), self.spec.config_path)
        self.haproxy = HAProxyProcess(self.spec.config_path, self.spec.socket_path, run_dir / "haproxy.log")
        self.api = RuntimeAPI(self.spec.socket_path)
        self.cluster_file = run_dir / "cluster.yaml"
        self.cluster_file.write_text(yaml.safe_dump(data))
        self.processes = processes
        self.sidecar_url = self.spec.sidecar.url

    def start(self) -> None:
        self.haproxy.start()
        proc = self.processes.start(["python", "-m", "balancer.sidecar", "--cluster", str(self.cluster_file),
                                     "--node-host", HOST], log_name="node-host-sidecar")
        wait_http(f"{self.sidecar_url}/status", proc=proc, timeout=30)


@pytest.fixture(scope="module")
def node_host(tmp_path_factory: pytest.TempPathFactory):
    with Processes("agent") as processes:
        host = NodeHost(tmp_path_factory.mktemp("agent"), processes)
        try:
            host.start()
            yield host
        finally:
            processes.stop_all()
            host.haproxy.stop()


def test_the_rendered_servers_ask_the_node_hosts_host_agent(node_host: NodeHost) -> None:
    config = node_host.spec.config_path.read_text()
    assert (f'server a 127.0.0.1:{node_host.spec.nodes[0].worker.port} maxconn 1 agent-check agent-addr 127.0.0.1 '
            f'agent-port {node_host.host_agent_port} agent-inter 200ms agent-send "workers/a\\n" '
            'on-error fastinter on-marked-down shutdown-sessions  #') in config
    assert f'agent-port {node_host.host_agent_port} agent-inter 200ms agent-send "webs/a\\n"' in config


def test_ready_parts_are_in_rotation_through_the_agent(node_host: NodeHost) -> None:
    wait_status(node_host.api, "workers", "a", "UP", timeout=30)
    wait_status(node_host.api, "webs", "a", "UP", timeout=30)
    assert ask_agent(node_host.host_agent_port, "workers/a") == REPLIES["ready"]
    # Worker c serves for 0.3 s after each start until its crash loop puts it in maint: only a then.
    wait_status(node_host.api, "workers", "c", "MAINT", timeout=30)
    assert httpx.get(f"{node_host.spec.public.url}/generate", timeout=10).json()["worker_id"] == "a-worker"


def test_a_crash_looping_part_is_maint_in_haproxy(node_host: NodeHost) -> None:
    wait_until(lambda: httpx.get(f"{node_host.sidecar_url}/status").json()["crash_looped"] == ["c/worker"],
               "c/worker crash-looped", 30, 0.1)
    wait_status(node_host.api, "workers", "c", "MAINT", timeout=5)
    assert ask_agent(node_host.host_agent_port, "workers/c") == REPLIES["maint"]


def test_an_operators_drain_reaches_haproxy_within_a_second(node_host: NodeHost) -> None:
    wait_status(node_host.api, "workers", "a", "UP", timeout=30)
    auth = ("admin", STATS_PASSWORD)
    started = time.monotonic()
    answer = httpx.post(f"{node_host.sidecar_url}/drain/a", auth=auth, timeout=5)
    assert answer.status_code == 200 and answer.json()["servers"] == {"workers/a": "drain", "webs/a": "drain"}
    wait_status(node_host.api, "workers", "a", "DRAIN", timeout=5)
    drained_after = time.monotonic() - started
    assert ask_agent(node_host.host_agent_port, "webs/a") == REPLIES["drain"]
    assert httpx.post(f"{node_host.sidecar_url}/ready/a", auth=auth, timeout=5).status_code == 200
    wait_status(node_host.api, "workers", "a", "UP", timeout=5)
    print(f"\noperator drain seen by HAProxy after {drained_after * 1000:.0f} ms (agent-inter 200 ms)")
    assert drained_after < 2.0  # a logic bound: a few agent intervals, nowhere near a health-check timeout


def test_the_agent_says_down_for_servers_it_does_not_run(node_host: NodeHost) -> None:
    assert ask_agent(node_host.host_agent_port, "workers/nope") == UNKNOWN_REPLY
    assert ask_agent(node_host.host_agent_port, "garbage") == UNKNOWN_REPLY


@pytest.mark.parametrize(("change", "message"), [
    ({"nodes": [{"name": "x", "node_host": "gpu9", "worker": {"port": 7000}}]}, "'gpu9' is not in node_hosts"),
    ({"node_hosts": [{"name": "gpu1", "address": "10.0.0.5"}],
      "nodes": [{"name": "x", "node_host": "gpu1", "web": {"port": 7000}}]}, "worker_queue.host"),
    ({"node_hosts": [{"name": "gpu1", "address": "10.0.0.5"}, {"name": "gpu1", "address": "10.0.0.6"}]},
     re.escape("node_hosts: duplicate names ['gpu1']")),
    ({"node_hosts": [{"name": "gpu1", "address": "10.0.0.5"}],
      "nodes": [{"name": "x", "node_host": "gpu1", "worker": {"port": 7000}},
                {"name": "y", "node_host": "gpu1", "worker": {"port": 7001, "dispatch_agent_port": 7000}}]},
     "nodes.y.worker.dispatch_agent_port: 7000 is already used by nodes.x.worker"),
    ({"health": {"agent_interval": 0.5}}, "dispatch_agent_interval .* and host_agent_interval"),
])
def test_bad_node_hosts_name_the_field(change: dict, message: str) -> None:
    with pytest.raises(ClusterConfigError, match=message):
        parse_cluster(change)


def test_each_server_has_one_agent_check_host_or_dispatch(tmp_path: Path) -> None:
    """A local worker keeps its dispatch agent; a node host's parts get its host agent; HAProxy accepts both."""
    from balancer.haproxy.process import validate_config

    spec = parse_cluster({
        "run_dir": str(tmp_path), "worker_queue": {"host": "10.0.0.1", "port": 8081},
        "node_hosts": [{"name": "gpu1", "address": "10.0.0.5", "host_agent_port": 9406}],
        "nodes": [{"name": "local", "worker": {"port": 7960, "dispatch_agent_port": 8960}},
                  {"name": "far", "node_host": "gpu1", "web": {"port": 7860},
                   "worker": {"port": 7960, "dispatch_agent_port": 8960}},
                  {"name": "plain", "node_host": "gpu1", "worker": {"port": 7961}}],
    })
    text = render_config(spec)
    validate_config(write_config(text, spec.config_path))
    servers = {line.split()[1] + "@" + line.split()[2]: line for line in node_server_lines(text)
               if " track " not in line}
    assert all(line.count("agent-check") == 1 for line in servers.values()), servers
    local = servers["local@127.0.0.1:7960"]
    assert 'agent-check agent-port 8960 agent-inter 10ms agent-send "workers/local\\n"  #' in local
    # The far worker's dispatch agent answers through the host agent: asked as often as a local one.
    for server, interval, backend in (("far@10.0.0.5:7960", "10ms", "workers"), ("far@10.0.0.5:7860", "500ms", "webs"),
                                      ("plain@10.0.0.5:7961", "500ms", "workers")):
        line = servers[server]
        name = server.partition("@")[0]
        assert (f'agent-check agent-addr 10.0.0.5 agent-port 9406 agent-inter {interval} '
                f'agent-send "{backend}/{name}\\n"' in line
                and "on-marked-down shutdown-sessions" in line and " ssl " not in line), line
    assert "on-marked-down" not in local
    assert "one job at a time" not in text  # node-host workers get their dispatch agent's second slot too


def test_node_host_parts_listen_on_their_hosts_address() -> None:
    spec = parse_cluster({
        "worker_queue": {"host": "10.0.0.1", "port": 8081},
        "node_hosts": [{"name": "gpu1", "address": "10.0.0.5"}],
        "nodes": [{"name": "x", "node_host": "gpu1", "web": {"port": 7000}, "worker": {"port": 8000}},
                  {"name": "y", "node_host": "gpu1", "worker": {"host": "10.0.0.9", "port": 8001}}],
    })
    assert [spec.nodes[0].web.address, spec.nodes[0].worker.address, spec.nodes[1].worker.address] == [
        "10.0.0.5:7000", "10.0.0.5:8000", "10.0.0.9:8001"]
    assert [node.name for node in spec.nodes_on("gpu1")] == ["x", "y"] and spec.nodes_on(None) == []


# --- launch.py --role node: which node host, and clear errors ---------------------------------


def node_host_file(tmp_path: Path, address: str, host_agent_port: int) -> Path:
    path = tmp_path / "hosts.yaml"
    path.write_text(yaml.safe_dump({
        "run_dir": str(tmp_path / "run"),
        "sidecar": {"port": free_port()},
        "node_hosts": [{"name": "gpu1", "address": address, "host_agent_port": host_agent_port}],
        "nodes": [{"name": "x", "node_host": "gpu1", "worker": {"port": free_port()}}],
    }))
    return path


@pytest.mark.parametrize(("address", "flags", "message"), [
    ("10.213.254.9", [], "cannot tell which node host this machine is (address matches: none): name it with "
                        "--node-host"),
    ("127.0.0.1", ["--node-host", "gpu9"], "no node host 'gpu9' in the cluster file (node_hosts: gpu1)"),
])
def test_role_node_says_which_node_host_it_cannot_find(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                       address: str, flags: list[str], message: str) -> None:
    from launch import main

    assert main(["--cluster", str(node_host_file(tmp_path, address, free_port())), "--role", "node", *flags]) == 2
    assert capsys.readouterr().err.strip() == f"error: {message}"


def test_role_node_exits_2_when_its_host_agent_port_is_taken(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from launch import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["--cluster", str(node_host_file(tmp_path, "127.0.0.1", port)), "--role", "node"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"error: the host agent cannot listen on 127.0.0.1:{port}: ")
    assert len(error.splitlines()) == 1
    assert error.lower().endswith("address already in use")


def test_the_hosts_example_renders_agent_checks_for_every_part(tmp_path: Path) -> None:
    from balancer.config.loading import load_cluster_file
    from balancer.haproxy.process import validate_config

    data = load_cluster_file(REPO / "assets" / "cluster.hosts.example.yaml")
    spec = parse_cluster({**data, "run_dir": str(tmp_path), "tls": None})  # its tls: tests/test_tls.py
    text = render_config(spec)
    validate_config(write_config(text, spec.config_path))
    assert text.count("agent-check agent-addr 10.0.0.21 agent-port 8406") == 4  # node1, node2: web + worker
    assert text.count("agent-check agent-addr 10.0.0.22 agent-port 8406") == 2
    assert "server node3 10.0.0.22:7960 maxconn 1 agent-check" in text
    assert [node.name for node in spec.nodes_on("gpu1")] == ["node1", "node2"]


def test_a_workers_dispatch_agent_answers_through_the_host_agent() -> None:
    """A node host's worker keeps its dispatch agent: the host agent asks it at each question about that worker
    and passes its words on (its readiness replacing the host's up); maxconn:1 when it cannot tell."""
    window = {"open": False, "serving": True}
    states: dict[tuple[str, str], str] = {("workers", "w"): "ready", ("webs", "w"): "ready"}

    async def scenario() -> None:
        dispatch = DispatchAgent(lambda: window["open"], serving=lambda: window["serving"])
        port = free_port()
        agent = HostAgent("127.0.0.1", 0, states.get, 0.05, {("workers", "w"): port}.get)
        await dispatch.start("127.0.0.1", port)
        try:
            assert await agent.answer("workers/w\n") == "ready maxconn:1 up"
            window["open"] = True  # a result is being encoded, the GPU free: a second job may come
            assert await agent.answer("workers/w\n") == "ready maxconn:2 up"
            states[("workers", "w")] = "drain"
            assert await agent.answer("workers/w\n") == "drain maxconn:2 up"
            window.update(open=False, serving=False)  # e.g. exiting after an out-of-memory
            assert await agent.answer("workers/w\n") == "drain maxconn:1 down"
            assert dispatch.polls == 4
            states[("workers", "w")] = "maint"
            assert await agent.answer("workers/w\n") == REPLIES["maint"]
            assert await agent.answer("webs/w\n") == REPLIES["ready"]  # a web front has no dispatch agent
            assert dispatch.polls == 4  # neither asked it
        finally:
            await dispatch.close()
        states[("workers", "w")] = "ready"
        assert await agent.answer("workers/w\n") == f"ready {GONE_DISPATCH}"  # its worker is gone
        assert GONE_DISPATCH.startswith("maxconn:1 down#")

        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await asyncio.sleep(DISPATCH_TIMEOUT * 5)
            writer.close()

        server = await asyncio.start_server(silent, "127.0.0.1", port)
        try:
            started = time.monotonic()
            assert await agent.answer("workers/w\n") == f"ready {SAFE_DISPATCH}"  # a frozen worker: one job
            assert time.monotonic() - started < DISPATCH_TIMEOUT * 3
        finally:
            server.close()
        assert SAFE_DISPATCH == "maxconn:1 up"

    asyncio.run(scenario())


@pytest.mark.skipif(shutil.which("unshare") is None or os.geteuid() != 0, reason="needs root and unshare")
def test_hosts_that_share_a_temp_dir_get_run_directories_of_their_own() -> None:
    """Two hosts (UTS namespaces with their own host names) sharing this machine's /tmp: each default run
    directory is its own."""
    code = "from balancer.config.loading import parse_cluster; print(parse_cluster({}).run_dir)"

    def run_dir_on(host: str) -> str:
        done = subprocess.run(["unshare", "--uts", "sh", "-c", 'hostname "$1" && exec "$2" -c "$3"', "sh", host,
                               sys.executable, code], capture_output=True, text=True, timeout=60, cwd=REPO)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    first, second = run_dir_on("gpu-host-a"), run_dir_on("gpu-host-b")
    assert first != second and Path(first).parent == Path(second).parent, (first, second)
