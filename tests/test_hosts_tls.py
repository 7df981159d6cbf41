"""Node hosts over mutual TLS: real hosts (network namespaces), real HAProxy, real node processes (stand-in model).

The layout of ``tests/test_hosts.py`` (``launch.py --role balancer`` in namespace ``b``, ``--role
node`` in ``n1`` and ``n2``, one cluster file), with ``tls`` and the certificates of one run of
``python -m balancer.multihost.certs --balancer b=ADDR --node n1=ADDR --node n2=ADDR``. Checked: a REST job
and a ``gradio_client`` job through the balancer succeed (HAProxy -> node host over TLS, the web
front -> the worker queue over TLS with its host's queue certificate -> a node host's worker over
TLS); a node-host port refuses plain HTTP, a client without a certificate, a node's certificate, a
web front's queue certificate, and the other node host's sidecar probe certificate
(``balancer.multihost.part_tls``: each host's probe CA is its own), while it lets a balancer in; the worker
queue refuses a client without a certificate and one with a balancer's or a node host's cluster
certificate, while it lets a node host's queue certificate in;
HAProxy shows every part UP with its host agent answering; a killed worker on a TLS node host goes
MAINT through the host agent, is restarted and probed by its sidecar over TLS, and is back UP.

Root only (CI runs as root), with ``ip`` and Debian's ``iptables``; select with ``-m hosts``.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from gradio_client import Client

from bench.harness.hosts_cluster import BALANCER, NODE_HOSTS, STANDIN_WORKER, HostsCluster, with_tls
from bench.harness.netns import NetworkLab, missing_for_labs
from bench.harness.processes import REPO, Processes
from bench.harness.waiting import wait_until
from tests.balancer_helpers import assert_refused, client_context
from tests.helpers import record_figures
from tests.suite_cluster import suite_health
from tests.test_hosts_rolling import ctl, part_pids

pytestmark = [pytest.mark.hosts, pytest.mark.skipif(missing_for_labs() is not None, reason=missing_for_labs() or "")]

ARTIFACT = REPO / "test-artifacts" / "hosts-tls.json"
WORKER_PORT = 7870
"""The harness's worker port on each node host (``bench.harness.hosts_cluster.cluster_file``)."""
WORKER_QUEUE_PORT = 8081
"""The harness's worker queue port on the balancer (``bench.harness.hosts_cluster.cluster_file``)."""
HEALTH = suite_health({"down_interval": 0.25})
"""The default checks (their 2 s timeout covers a TLS handshake on a busy machine), but a down server, restarted,
is checked every 0.25 s: back UP sooner."""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[HostsCluster, Path]]:
    """The three hosts with ``tls`` (workers on the fixed-latency stand-in: TLS is the subject, not the model),
    every part UP on the balancer; (cluster, certificate directory)."""
    run_dir = tmp_path_factory.mktemp("hosts-tls")
    with Processes("hosts-tls") as processes, NetworkLab([BALANCER, *NODE_HOSTS.values()], processes) as lab:
        certs = run_dir / "certs"
        hosts = HostsCluster(lab, run_dir, HEALTH, worker_args=STANDIN_WORKER)
        with_tls(hosts.file, certs, f"{BALANCER}={lab.address[BALANCER]}",
                 {host: lab.address[host] for host in NODE_HOSTS.values()})
        hosts.start(timeout=240)
        yield hosts, certs


def test_jobs_reach_node_hosts_over_mutual_tls(cluster: tuple[HostsCluster, Path], tmp_path: Path) -> None:
    hosts, _ = cluster
    rest = hosts.generate(steps=2, width=128, height=128)
    assert rest.status_code == 200, rest.text
    assert rest.json()["worker_id"] in NODE_HOSTS and len(rest.json()["images"]) == 1
    # Its worker recorded it at the jobs service, through the worker queue with its host's queue certificate.
    assert "x-job-id" in rest.headers, "the node host's worker did not record its job over mutual TLS"

    # The page's path: HAProxy -> web front (TLS) -> worker queue (TLS) -> HAProxy -> worker (TLS).
    client = Client(hosts.url, verbose=False, download_files=str(tmp_path))
    gallery, info = client.predict(prompt="tls hosts", width=128, height=128, steps=2, seed=5, api_name="/generate")
    assert info["worker_id"] in NODE_HOSTS and info["seed"] == 5
    assert Path(gallery[0]["image"]).stat().st_size > 0


def test_node_host_ports_let_only_balancers_in(cluster: tuple[HostsCluster, Path]) -> None:
    hosts, certs = cluster
    ca = certs / "ca.crt"
    url = f"https://{hosts.lab.address['n1']}:{WORKER_PORT}/readyz"
    # The control: the balancer's certificate gets in, so the refusals below are about certificates.
    assert httpx.get(url, verify=client_context(ca, certs / f"{BALANCER}.pem"), timeout=10).status_code == 200
    # n1's own sidecar probes with a certificate of its own throwaway CA; n2's is worth nothing on n1.
    n1_probe, n2_probe = (hosts.run_dirs[host] / "tls" / "probe.pem" for host in ("n1", "n2"))
    assert httpx.get(url, verify=client_context(ca, n1_probe), timeout=10).status_code == 200
    refused = {
        "no certificate": client_context(ca),
        "a node host's certificate": client_context(ca, certs / "n2.pem"),
        "another node host's probe certificate": client_context(ca, n2_probe),
        "a web front's queue certificate": client_context(ca, certs / "n1-queue.pem"),
    }
    assert_refused(url, refused, "n1's worker")
    with pytest.raises(httpx.TransportError):
        httpx.get(url.replace("https://", "http://"), timeout=10)  # plain HTTP is not served


def test_the_worker_queue_lets_only_web_fronts_in(cluster: tuple[HostsCluster, Path]) -> None:
    """From the test's veth (another host on the nodes' network): the queue asks for a queue-CA client certificate."""
    hosts, certs = cluster
    ca = certs / "ca.crt"
    url = f"https://{hosts.lab.address[BALANCER]}:{WORKER_QUEUE_PORT}/readyz"
    # The control: a node host's queue certificate (what its web fronts present) gets in.
    assert httpx.get(url, verify=client_context(ca, certs / "n1-queue.pem"), timeout=10).status_code == 200
    refused = {
        "no certificate": client_context(ca),
        "the balancer's cluster certificate": client_context(ca, certs / f"{BALANCER}.pem"),
        "a node host's cluster certificate": client_context(ca, certs / "n2.pem"),
    }
    assert_refused(url, refused, "the worker queue")


def test_a_killed_worker_on_a_tls_node_host_comes_back_up(cluster: tuple[HostsCluster, Path]) -> None:
    hosts, certs = cluster
    hosts.wait_all_up(timeout=60)
    rows = {f"{row['pxname']}/{row['svname']}": row for row in hosts.api.show_stat()}
    for server in hosts.statuses():
        # UP by its TLS health check, and its host agent answered (HAProxy's agent check: plain TCP).
        # HAProxy puts "* " before the last result while the next check is running.
        last_results = tuple(rows[server][field].removeprefix("* ") for field in ("check_status", "agent_status"))
        assert last_results == ("L7OK", "L7OK"), rows[server]

    worker = next(pid for pid in hosts.lab.pids("n2") if "webui.worker" in " ".join(_cmdline(pid)))
    killed_at = time.monotonic()
    os.kill(worker, signal.SIGKILL)
    wait_until(lambda: hosts.statuses()["workers/node2"] == "MAINT", "workers/node2 MAINT via the host agent",
               10, 0.02)
    maint_after = time.monotonic() - killed_at
    # Back UP only once n2's sidecar probed the new worker over TLS (it stays MAINT until then).
    hosts.wait_all_up(timeout=180)
    figures = {"maint_after_s": round(maint_after, 2), "back_up_after_s": round(time.monotonic() - killed_at, 2),
               "load_average": os.getloadavg()}
    record_figures(ARTIFACT, "worker-killed", figures)
    print(f"\nTLS node host: killed worker MAINT after {figures['maint_after_s']} s, back UP after "
          f"{figures['back_up_after_s']} s; load {figures['load_average']}")
    replacement = next(pid for pid in hosts.lab.pids("n2") if "webui.worker" in " ".join(_cmdline(pid)))
    assert replacement != worker and "--tls-cert" in _cmdline(replacement)
    assert hosts.generate(steps=2, width=128, height=128).status_code == 200


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text().split("\0")
    except OSError:
        return []


def test_a_rolling_restart_on_a_tls_node_host_counts_its_parts_over_tls(cluster: tuple[HostsCluster, Path]) -> None:
    """The node host's sidecar waits on its parts' own request counts (``GET /traffic``), asked over mutual TLS
    with its probe identity (``balancer.operations.traffic.PartTraffic``); the restart of n1's node completes,
    new pids, and each old process ended on its SIGTERM (uvicorn's last line), not SIGKILLed after the stop grace
    while its TLS server waited on the sidecar's idle connections."""
    hosts, _ = cluster
    hosts.wait_all_up(timeout=60)
    before = part_pids(hosts, "n1")
    restart = ctl(hosts, "n1", "rolling-restart", "--drain-timeout", "60", "--settle", "0.5")
    print(restart.stdout, restart.stderr)
    assert restart.returncode == 0, restart.stdout + restart.stderr
    after = part_pids(hosts, "n1")
    assert set(before) == {("node1", "web"), ("node1", "worker")}
    assert all(after[key] not in (None, pid) for key, pid in before.items()), (before, after)
    logs = hosts.run_dirs["n1"] / "logs"
    for (node, part), pid in before.items():
        assert f"Finished server process [{pid}]" in (logs / f"{node}-{part}.log").read_text(), (node, part)
    hosts.wait_all_up(timeout=120)
    assert hosts.generate(steps=2, width=128, height=128).status_code == 200
