"""Two balancers, one address: the cluster file's floating address, keepalived.conf, HAProxy's check.

Fast checks without namespaces; the address moving between real balancer hosts is ``tests/test_pair.py``
(``-m hosts``, root).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from starlette.testclient import TestClient

from balancer.api.basic_auth import BasicAuth
from balancer.api.metrics import FloatingView, SidecarMetrics
from balancer.api.routes import status_app
from balancer.cli.ctl_output import format_status
from balancer.config.basics import ClusterConfigError
from balancer.config.loading import load_cluster_file, parse_cluster
from balancer.haproxy.config import render_config
from balancer.haproxy.process import HAProxyProcess, write_config
from balancer.multihost.keepalived import (
    CHECK_SCRIPT,
    NOTIFY_SCRIPT,
    render_keepalived_config,
    script_line,
    vrrp_state_path,
)
from bench.harness.processes import REPO
from tests.balancer_helpers import cluster_data
from tests.helpers import unquotable_checkout

EXAMPLE = REPO / "assets" / "cluster.pair.example.yaml"
quotable_checkout = pytest.mark.skipif(unquotable_checkout() is not None, reason=unquotable_checkout() or "")
"""For tests that render this checkout's scripts into keepalived.conf."""


def example() -> dict:
    return load_cluster_file(EXAMPLE)


@quotable_checkout
def test_each_balancer_gets_its_priority_its_peers_and_the_floating_address() -> None:
    spec = parse_cluster(example())
    first, second = (render_keepalived_config(spec, spec.balancer(name)) for name in ("lb1", "lb2"))
    for text, own, peer, priority in ((first, "10.0.0.10", "10.0.0.11", 150), (second, "10.0.0.11", "10.0.0.10", 100)):
        assert f"priority {priority}\n" in text
        assert f"unicast_src_ip {own}\n    unicast_peer {{\n        {peer}\n    }}" in text
        assert "10.0.0.5/24 dev eth0" in text
        assert "advert_int 0.5\n" in text and "version 3\n" in text
        assert f"'{CHECK_SCRIPT}' '{spec.socket_path}'\"" in text
        assert "track_script {\n        haproxy_alive" in text
    first_lines, second_lines = first.splitlines(), second.splitlines()
    assert len(first_lines) == len(second_lines)
    differing = [(one, two) for one, two in zip(first_lines, second_lines, strict=True) if one != two]
    lb1, lb2 = spec.balancer("lb1"), spec.balancer("lb2")
    expected = [(f"{prefix}{values[0]}{suffix}", f"{prefix}{values[1]}{suffix}") for prefix, values, suffix in (
        ("# Rendered by portrait-ha (balancer/multihost/keepalived.py) for balancer ", (lb1.name, lb2.name),
         ": do not edit, edit the"),
        ("    router_id portrait-ha-", (lb1.name, lb2.name), ""),
        ("    priority ", (lb1.priority, lb2.priority), ""),
        ("    unicast_src_ip ", (lb1.address, lb2.address), ""),
        ("        ", (lb2.address, lb1.address), ""),  # the one peer
    )]
    assert differing == expected  # nothing else differs


@quotable_checkout
@pytest.mark.skipif(shutil.which("keepalived") is None or os.geteuid() != 0,
                    reason="keepalived's own config check needs Debian's keepalived, as root (as it runs)")
@pytest.mark.parametrize("run_dir", ["plain", "with space & ü"])
def test_keepalived_accepts_the_rendered_configuration(tmp_path: Path, run_dir: str) -> None:
    """Also where the run directory (in the scripts' arguments) has spaces: each argument is quoted."""
    spec = parse_cluster({**example(), "run_dir": str(tmp_path / run_dir)})
    path = tmp_path / "keepalived.conf"
    path.write_text(render_keepalived_config(spec, spec.balancer("lb2")))
    checked = subprocess.run(["keepalived", "--config-test", "--use-file", str(path)], capture_output=True, text=True,
                             timeout=30)
    assert checked.returncode == 0, checked.stderr


def test_a_script_path_keepalived_cannot_quote_is_refused_in_words(tmp_path: Path) -> None:
    spec = parse_cluster({**example(), "run_dir": str(tmp_path / "it's")})
    with pytest.raises(ClusterConfigError, match="must not contain quotes"):
        render_keepalived_config(spec, spec.balancer("lb1"))


@pytest.mark.parametrize(("change", "message"), [
    ({"balancers": []}, "needs two or more balancers"),
    ({"floating": None}, "set floating.address"),
    ({"floating": {"address": "10.0.0.10"}}, "must differ from every balancer"),
    ({"floating": {"address": "studio.example.com"}}, "is not an IPv4 address"),
    ({"floating": {"address": "10.0.0.5", "check_interval": 0.5}}, "floating.check_interval"),
    ({"balancers": [{"name": "lb1", "address": "10.0.0.10"}, {"name": "lb2", "address": "10.0.0.10"}]},
     r"duplicate addresses \['10.0.0.10'\]"),
])
def test_a_bad_pair_is_refused_naming_the_field(change: dict, message: str) -> None:
    with pytest.raises(ClusterConfigError, match=message):
        parse_cluster({**example(), **change})


def test_a_balancer_is_found_by_name_or_refused_with_the_known_ones() -> None:
    spec = parse_cluster(example())
    assert spec.balancer("lb2").priority == 100
    with pytest.raises(ClusterConfigError, match=r"no balancer 'lb9' in the cluster file \(balancers: lb1, lb2\)"):
        spec.balancer("lb9")
    with pytest.raises(ClusterConfigError, match="cannot tell which balancer this machine is .* --balancer"):
        spec.balancer(None)  # the example's addresses are no one's here


def test_launch_names_an_unknown_balancer_in_one_line(tmp_path: Path) -> None:
    data = {**example(), "run_dir": str(tmp_path / "run")}
    cluster_file = tmp_path / "cluster.yaml"
    cluster_file.write_text(yaml.safe_dump(data))
    result = subprocess.run([sys.executable, "launch.py", "--cluster", str(cluster_file), "--role", "balancer",
                             "--balancer", "lb9"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == ("error: no balancer 'lb9' in the cluster file "
                                                      "(balancers: lb1, lb2)")
    assert "Traceback" not in result.stderr


def check_script(socket_path: Path) -> int:
    """keepalived's check, run as keepalived runs it."""
    return subprocess.run([sys.executable, "-I", "-S", str(CHECK_SCRIPT), str(socket_path)], timeout=10).returncode


def test_the_check_passes_while_haproxy_answers_and_fails_once_it_stopped(tmp_path: Path) -> None:
    spec = parse_cluster(cluster_data(tmp_path, ["n1"], ["n1"]))
    haproxy = HAProxyProcess(write_config(render_config(spec), spec.config_path), spec.socket_path,
                             tmp_path / "haproxy.log")
    haproxy.start()
    try:
        assert check_script(spec.socket_path) == 0
    finally:
        haproxy.stop(0.0)
    assert check_script(spec.socket_path) == 1
    assert check_script(tmp_path / "no-such.sock") == 1


def test_launch_says_keepalived_is_missing_in_one_line(tmp_path: Path) -> None:
    data = {**example(), "run_dir": str(tmp_path / "run")}
    cluster_file = tmp_path / "cluster.yaml"
    cluster_file.write_text(yaml.safe_dump(data))
    result = subprocess.run([sys.executable, "launch.py", "--cluster", str(cluster_file), "--role", "balancer",
                             "--balancer", "lb1"], cwd=REPO, capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PATH": str(tmp_path)})  # no keepalived on this PATH
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: keepalived is not installed (Debian: apt-get")
    assert "Traceback" not in result.stderr


def notify(state_file: Path, *args: str) -> int:
    """keepalived's notify script, run as keepalived runs it (its arguments after ours)."""
    return subprocess.run([sys.executable, "-I", "-S", str(NOTIFY_SCRIPT), str(state_file), *args],
                          capture_output=True, timeout=10).returncode


@quotable_checkout
def test_keepalived_tells_each_state_change_to_a_file_in_the_run_dir(tmp_path: Path) -> None:
    spec = parse_cluster({**example(), "run_dir": str(tmp_path)})
    text = render_keepalived_config(spec, spec.balancer("lb1"))
    assert f'notify "{script_line(sys.executable, "-I", "-S", NOTIFY_SCRIPT, vrrp_state_path(spec))}"' in text
    state = vrrp_state_path(spec)
    assert notify(state, "INSTANCE", "portrait_ha", "BACKUP", "150") == 0
    assert state.read_text() == "BACKUP\n"
    assert notify(state, "INSTANCE", "portrait_ha", "MASTER", "150") == 0
    assert state.read_text() == "MASTER\n" and state.stat().st_mode & 0o077 == 0
    assert notify(state, "INSTANCE", "portrait_ha", "SOMETHING", "150") == 1  # not a VRRP state: kept as it was
    assert notify(state, "INSTANCE") == 2
    assert state.read_text() == "MASTER\n"
    assert [path.name for path in tmp_path.iterdir()] == [state.name]  # no partial file left


@pytest.mark.parametrize(("state", "said"), [("MASTER", "MASTER (this balancer holds it)"),
                                             ("BACKUP", "BACKUP (held elsewhere)"),
                                             (None, "unknown (keepalived has not said yet)")])
def test_status_metrics_and_ctl_say_whether_this_balancer_holds_the_address(state: str | None, said: str) -> None:
    metrics = SidecarMetrics()
    app = status_app(list, metrics, lambda node, part: None, BasicAuth("admin", "x"), gpus=dict,
                     floating=FloatingView("10.0.0.5", lambda: state))
    with TestClient(app) as client:
        document = client.get("/status").json()
        exposition = client.get("/metrics").text
    assert document["floating"] == {"address": "10.0.0.5", "state": state}
    for name in ("MASTER", "BACKUP", "FAULT", "STOP"):
        assert f'portrait_sidecar_vrrp_state{{state="{name}"}} {1.0 if name == state else 0.0}' in exposition
    assert f"floating address 10.0.0.5: {said}" in format_status(document)


def test_a_balancer_without_a_floating_address_shows_none() -> None:
    metrics = SidecarMetrics()
    app = status_app(list, metrics, lambda node, part: None, BasicAuth("admin", "x"), gpus=dict)
    with TestClient(app) as client:
        assert "floating" not in client.get("/status").json()
        assert "portrait_sidecar_vrrp_state" not in client.get("/metrics").text
