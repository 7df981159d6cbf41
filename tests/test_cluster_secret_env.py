"""The cluster secret reaches launch.py's children in the environment built for them, not through its own.

``launch.main`` hands the secret to HAProxy and the parts explicitly (``children_env``), so its own process
environment (and so a later test's hand-started web fronts and workers) never carries it. That the
children do get it is shown on a real cluster in ``tests/test_internal_ports.py``.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import yaml

from balancer.system.cluster_secret import children_env
from bench.harness.processes import free_port
from webui.contract import CLUSTER_SECRET_ENV, CLUSTER_SECRET_FILE

SHARED = "a-shared-cluster-secret-0123456789"


def test_children_get_this_clusters_secret_and_never_an_inherited_one() -> None:
    base = {"PATH": "/bin", CLUSTER_SECRET_ENV: "left over from the shell"}
    assert children_env(SHARED, base) == {"PATH": "/bin", CLUSTER_SECRET_ENV: SHARED}
    assert children_env(None, base) == {"PATH": "/bin"}
    assert base == {"PATH": "/bin", CLUSTER_SECRET_ENV: "left over from the shell"}


def balancer_file(tmp_path: Path) -> list[str]:
    """A balancer whose own TLS certificate is missing: the launch stops after making a fresh secret."""
    (tmp_path / "ca.crt").write_text("not read before the missing certificate is noticed\n")
    path = tmp_path / "balancer.yaml"
    path.write_text(yaml.safe_dump({
        "run_dir": str(tmp_path / "run"), "worker_queue": {"host": "10.0.0.1", "port": free_port()},
        "tls": {"ca_file": str(tmp_path / "ca.crt"), "cert_file": str(tmp_path / "missing.pem")},
        "node_hosts": [{"name": "gpu1", "address": "127.0.0.1", "host_agent_port": free_port()}],
        "nodes": [{"name": "x", "node_host": "gpu1", "worker": {"port": free_port()}}]}))
    return ["--cluster", str(path), "--role", "balancer"]


def node_host_file(tmp_path: Path, host_agent_port: int) -> list[str]:
    """A node host with a shared secret file whose host agent's port is taken: it stops before any part starts."""
    secret_file = tmp_path / "shared.secret"
    secret_file.write_text(SHARED + "\n")
    secret_file.chmod(0o600)
    path = tmp_path / "hosts.yaml"
    path.write_text(yaml.safe_dump({
        "run_dir": str(tmp_path / "run"), "sidecar": {"port": free_port()}, "cluster_secret_file": str(secret_file),
        "node_hosts": [{"name": "gpu1", "address": "127.0.0.1", "host_agent_port": host_agent_port}],
        "nodes": [{"name": "x", "node_host": "gpu1", "worker": {"port": free_port()}}]}))
    return ["--cluster", str(path), "--role", "node"]


@pytest.mark.parametrize("role", ["balancer", "node"])
def test_launch_leaves_its_own_environment_as_it_was(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                     role: str) -> None:
    from launch import main

    before = dict(os.environ)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        argv = balancer_file(tmp_path) if role == "balancer" else node_host_file(tmp_path, taken.getsockname()[1])
        assert main(argv) == 2
    secret = (tmp_path / "run" / CLUSTER_SECRET_FILE).read_text().strip()
    assert len(secret) >= 16 and (role == "balancer" or secret == SHARED)  # it got this far
    assert dict(os.environ) == before
    assert secret not in capsys.readouterr().err
