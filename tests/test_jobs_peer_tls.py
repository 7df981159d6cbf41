"""With ``tls``, a balancer's HAProxy reaches the other balancers' jobs services over mutual TLS (``jobs.backups``).

Real processes on loopback, no network namespaces: two jobs services (``python -m jobs``) share one SQLite store;
the "peer" one also listens with mutual TLS (``--peer-host``, the pair's balancer certificate, the cluster CA).
A real HAProxy, rendered from a cluster file with ``tls``, has the other as its own (``local``) and the peer's TLS
listener as its ``backup`` (``ssl verify required``, our client certificate). Checked: with its own service
SIGKILLed, a read and keyed submissions through the public port are served by the peer (the same key answers the
same job); the peer's TLS listener refuses a client without a certificate, with a node's (server-only)
certificate, or in plain HTTP.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from balancer.config.loading import parse_cluster
from balancer.haproxy.config import render_config
from balancer.haproxy.names import JOBS_BACKEND, JOBS_BACKUP_PREFIX, JOBS_SERVER
from balancer.haproxy.process import HAProxyProcess, RuntimeAPI, find_haproxy, write_config
from bench.harness.balancer import cluster_data, wait_servers_up
from bench.harness.processes import Processes, free_port
from tests.balancer_helpers import assert_refused, client_context
from tests.jobs_service import JOB, SECRET, Part, service
from tests.test_tls import make_certs

pytestmark = pytest.mark.skipif(find_haproxy() is None, reason="needs haproxy")

PEER = "lb2"
"""The other balancer, as the cluster file's ``jobs.backups`` names it."""


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One balancer certificate for the pair (as docs/security.md makes it) and a node host's."""
    out = tmp_path_factory.mktemp("peer-certs") / "cluster"
    result = make_certs(out, "--balancer", "lb=127.0.0.1,localhost", "--node", "gpu1=127.0.0.1,localhost")
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope="module")
def pair(certs: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Part, Part, int, object]]:
    """The local service, the peer (plain port unused, TLS port given), HAProxy's public port and its spec."""
    run = tmp_path_factory.mktemp("peer-tls")
    store = f"sqlite:///{run / 'jobs.sqlite3'}"
    processes = Processes("jobs-peer-tls")
    no_worker = f"http://127.0.0.1:{free_port()}"  # nothing runs the jobs: the subject is who answers
    try:
        local = service(processes, "local", no_worker, store).start().ready("/readyz")
        tls_port = free_port()
        peer = service(processes, "peer", no_worker, store, "--peer-host", "127.0.0.1", "--peer-port", str(tls_port),
                       "--tls-cert", str(certs / "lb.pem"), "--tls-ca", str(certs / "ca.crt")).start().ready("/readyz")
        data = cluster_data(run, [], [], jobs={"port": local.port, "store_url": store,
                                               "backups": {PEER: f"127.0.0.1:{tls_port}"}})
        data["tls"] = {"ca_file": str(certs / "ca.crt"), "cert_file": str(certs / "lb.pem")}
        spec = parse_cluster(data)
        path = write_config(render_config(spec), spec.config_path)
        haproxy = HAProxyProcess(path, spec.socket_path, run / "haproxy.log", env={**os.environ, **SECRET})
        haproxy.start()
        try:
            wait_servers_up(spec, [(JOBS_BACKEND, JOBS_SERVER), (JOBS_BACKEND, JOBS_BACKUP_PREFIX + PEER)],
                            timeout=30)
            yield local, peer, tls_port, spec
        finally:
            haproxy.stop()
    finally:
        processes.stop_all()


def test_the_tls_peer_serves_reads_and_keyed_submissions_once_the_local_service_is_dead(pair) -> None:
    local, _peer, _tls_port, spec = pair
    public = f"http://127.0.0.1:{spec.public.port}/v1/jobs"
    key = {"Idempotency-Key": str(uuid.uuid4())}
    first = httpx.post(public, json=JOB, headers=key, timeout=30)
    assert first.status_code == 202, first.text
    api = RuntimeAPI(spec.socket_path)
    backup = JOBS_BACKUP_PREFIX + PEER
    assert api.server(JOBS_BACKEND, backup).total_sessions == 0  # its own service answered so far

    local.kill()
    job_id = first.json()["id"]
    read = httpx.get(f"{public}/{job_id}", timeout=30)
    assert read.status_code == 200 and read.json()["id"] == job_id, read.text
    again = httpx.post(public, json=JOB, headers=key, timeout=30)
    assert again.status_code in (200, 202) and again.json()["id"] == job_id, again.text  # same key: same job
    other = httpx.post(public, json=JOB, headers={"Idempotency-Key": str(uuid.uuid4())}, timeout=30)
    assert other.status_code == 202 and other.json()["id"] != job_id, other.text
    assert api.server(JOBS_BACKEND, backup).total_sessions >= 3  # over mutual TLS, from the shared store


def test_the_peer_listener_serves_only_clients_with_a_balancer_certificate(pair, certs: Path) -> None:
    _local, _peer, tls_port, _spec = pair
    url = f"https://127.0.0.1:{tls_port}/readyz"
    ca = certs / "ca.crt"
    assert httpx.get(url, verify=client_context(ca, certs / "lb.pem"), timeout=10).status_code == 200
    assert_refused(url, {"no certificate": client_context(ca), "a node's certificate":
                         client_context(ca, certs / "gpu1.pem")}, "the jobs service's peer listener")
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{tls_port}/readyz", timeout=10)  # no plain HTTP there
