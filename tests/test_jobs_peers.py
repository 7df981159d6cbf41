"""Balancers sharing a PostgreSQL job store list each other's jobs service as backups (``balancer.config.jobs_peers``).

Rendered and checked by HAProxy itself (``haproxy -c``); the behaviour under a killed service is
``tests/test_pair_jobs.py`` (``-m hosts``).
"""

from __future__ import annotations

from pathlib import Path

from balancer.config.access import TLSSpec
from balancer.config.jobs_peers import with_jobs_peers
from balancer.config.jobs_service import JOBS_STORE_URL_ENV
from balancer.config.loading import parse_cluster
from balancer.haproxy.config import render_config
from balancer.haproxy.process import validate_config, write_config
from balancer.haproxy.syntax import config_path_arg
from balancer.operations.parts import jobs_command
from bench.harness.balancer import cluster_data
from tests.test_tls import make_certs

STORE = "postgresql+psycopg://jobs@10.0.0.30/jobs"
BALANCERS = [{"name": "lb1", "address": "10.0.0.10"}, {"name": "lb2", "address": "10.0.0.11"},
             {"name": "lb3", "address": "10.0.0.12"}]


def pair_spec(tmp_path: Path, **jobs: object):
    data = cluster_data(tmp_path, ["n1"], ["n1"], jobs=jobs)
    data["public"] = {"host": "10.0.0.5", "port": 8080}
    data["floating"] = {"address": "10.0.0.5"}
    data["balancers"] = BALANCERS
    return parse_cluster(data)


def jobs_backend(text: str) -> str:
    return text.split("backend jobs\n", 1)[1].split("\n\n", 1)[0]


def servers(backend: str) -> list[list[str]]:
    return [line.split("#")[0].split() for line in backend.splitlines() if line.strip().startswith("server ")]


def test_with_a_shared_store_the_other_balancers_services_are_backups(tmp_path: Path) -> None:
    plain = pair_spec(tmp_path, store_url=STORE)
    spec = with_jobs_peers(plain, plain.balancer("lb2"), {})
    text = render_config(spec)
    validate_config(write_config(text, spec.config_path))
    backend = jobs_backend(text)
    assert servers(backend) == [["server", "local", "10.0.0.11:8407"],
                       ["server", "peer-lb1", "10.0.0.10:8407", "backup"],
                       ["server", "peer-lb3", "10.0.0.12:8407", "backup"]]
    assert "retry-on conn-failure empty-response" in backend and "option redispatch 1" in backend
    assert "disable-l7-retry if !METH_GET !METH_HEAD !{ req.hdr(idempotency-key) -m found }" in backend
    command = jobs_command(spec)
    assert command[command.index("--host") + 1] == "10.0.0.11"  # where the other balancers reach it
    assert plain.jobs.host == "127.0.0.1" and not plain.jobs.backups  # the file's spec is left alone


def test_the_environments_store_url_counts_and_sqlite_gets_no_backups(tmp_path: Path) -> None:
    sqlite = pair_spec(tmp_path)
    me = sqlite.balancer("lb1")
    assert with_jobs_peers(sqlite, me, {}) is sqlite
    assert servers(jobs_backend(render_config(sqlite))) == [["server", "local", "127.0.0.1:8407"]]
    from_env = with_jobs_peers(sqlite, me, {JOBS_STORE_URL_ENV: STORE.replace("jobs@", "jobs:pw@")})
    assert list(from_env.jobs.backups) == ["lb2", "lb3"]
    own = pair_spec(tmp_path, store_url=STORE, backups={"other": "10.0.0.40:8407"})
    assert with_jobs_peers(own, me, {}).jobs.backups == {"other": "10.0.0.40:8407"}  # the operator's list wins


def test_with_tls_the_backups_are_reached_over_mutual_tls_and_the_service_adds_a_tls_listener(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    assert make_certs(certs, "--balancer", "lb=10.0.0.5,10.0.0.10,10.0.0.11").returncode == 0  # one for the pair
    plain = pair_spec(tmp_path, store_url=STORE)
    tls_spec = TLSSpec(ca_file=certs / "ca.crt", cert_file=certs / "lb.pem")
    spec = with_jobs_peers(plain.model_copy(update={"tls": tls_spec}), plain.balancer("lb2"), {})
    text = render_config(spec)
    validate_config(write_config(text, spec.config_path))
    tls = ["ssl", "verify", "required", "ca-file", config_path_arg(tls_spec.ca_file),
           "crt", config_path_arg(tls_spec.cert_file), "verifyhost", "lb"]  # the name in the pair's certificate
    assert servers(jobs_backend(text)) == [["server", "local", "127.0.0.1:8407"],  # its own: loopback, plain
                                           ["server", "peer-lb1", "10.0.0.10:8407", "backup", *tls],
                                           ["server", "peer-lb3", "10.0.0.12:8407", "backup", *tls]]
    command = jobs_command(spec)
    assert command[command.index("--host") + 1] == "127.0.0.1"
    assert command[command.index("--peer-host") + 1] == "10.0.0.11"
    assert command[command.index("--tls-cert") + 1] == str(tls_spec.cert_file)
    assert command[command.index("--tls-ca") + 1] == str(tls_spec.ca_file)
    named = spec.model_copy(update={"jobs": spec.jobs.model_copy(update={"peer_cert_name": "balancers"})})
    assert servers(jobs_backend(render_config(named)))[1][-1] == "balancers"  # each balancer its own certificate
