"""Many balancers, one truth: a balancer whose jobs service keeps dying still serves /v1/jobs, from its peer's.

Two balancer hosts share a floating address and one PostgreSQL job store (``bench.harness.pair``; a real
PostgreSQL on the lab's subnet, ``bench.harness.postgres``); two node hosts run fixed-latency stand-in workers.
Each balancer's HAProxy lists the other balancer's jobs service as a ``backup`` server of its ``jobs`` backend
(``balancer.config.jobs_peers``). While two clients submit jobs through the floating address (one holding each
answer with ``Prefer: wait``, one reading its job until it ends), the holder's jobs service is SIGKILLed each
time it runs, for ``HOLD`` seconds (its sidecar restarts it, then holds it down as crash-looping). Checked: every
request succeeded (no client retry: HAProxy replays a read, or a submission with an ``Idempotency-Key``, whose
service died unanswered, on the peer once the local one is down); every job ended succeeded, and the store holds
one job per key; the peer's service did serve through the holder's HAProxy, over mutual TLS (the pair runs with
``tls``: the holder's HAProxy reaches the peer's jobs service on its TLS listener, ``jobs.peer_host``).

Quotas across the failover (the same lab, one PostgreSQL store): an account with ``--daily-images 2`` has its 2
images accepted by the holder's own jobs service, the holder's whole balancer host is killed, and its next image,
through the floating address on the peer (counted by the peer's jobs service, from the shared store), is a 429
with ``Retry-After`` and the ``RateLimit`` fields.

Root only, with ``ip``, Debian's ``iptables``, ``keepalived`` and PostgreSQL 15; select with ``-m hosts``.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.pool import NullPool

from balancer.config.loading import load_cluster_file
from balancer.haproxy.names import JOBS_BACKEND, JOBS_BACKUP_PREFIX, JOBS_SERVER
from bench.harness.hosts_cluster import JOB, NODE_HOSTS, STANDIN_WORKER, with_tls
from bench.harness.netns import NetworkLab, missing_for_labs
from bench.harness.pair import BALANCERS, LAB_HOSTS, PairCluster, Retrying
from bench.harness.pair_jobs import JobsServiceKiller, StrictJobClient, retry_jobs_service
from bench.harness.postgres import BIN, PostgresServer
from bench.harness.processes import REPO, Processes
from bench.harness.waiting import wait_until
from jobs.store.schema import jobs as jobs_table
from tests.helpers import record_figures, unquotable_checkout
from tests.suite_cluster import suite_health
from tests.test_accounts_api import accounts_cli
from webui.contract import RETRYABLE_STATUSES


def _missing() -> str | None:
    if shutil.which("keepalived") is None:
        return "the pair test needs Debian's keepalived (scripts/setup.sh --dev as root installs it)"
    if not (BIN / "initdb").is_file():
        return f"the pair jobs test needs PostgreSQL 15's server binaries in {BIN}"
    return unquotable_checkout() or missing_for_labs()


pytestmark = [pytest.mark.hosts, pytest.mark.skipif(_missing() is not None, reason=_missing() or "")]

ARTIFACT = REPO / "test-artifacts" / "pair-jobs.json"
EXAMPLE = load_cluster_file(REPO / "assets" / "cluster.pair.example.yaml")
HEALTH = suite_health({**EXAMPLE["health"], "slowstart": 0})
ADVERT = EXAMPLE["floating"]["advert_interval"]
HOLD = 8.0
"""Seconds the holder's jobs service is killed whenever it runs."""
FOLLOW = 60.0
"""Bound (seconds) on one job, submission to end: a job its dead service held waits out its lease (10 s)."""
BODY = {**JOB, "steps": 2, "width": 256, "height": 256}
DAILY = 2
"""The quota test's account: images per day."""


@dataclass
class Pair:
    lab: NetworkLab
    cluster: PairCluster
    store: str
    """The shared PostgreSQL store's URL."""


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    """The pair over mutual TLS: each balancer's HAProxy reaches its peer's jobs service on the peer's TLS
    listener (``jobs.peer_host``), as a pair across a network would."""
    run_dir = tmp_path_factory.mktemp("pair-jobs")
    with (Processes("pair-jobs") as processes, NetworkLab(LAB_HOSTS, processes) as lab,
          PostgresServer(lab.client_address) as postgres):
        store = postgres.create_database()
        cluster = PairCluster(lab, run_dir, HEALTH, ADVERT, worker_args=STANDIN_WORKER, jobs={"store_url": store})
        # One lb.pem for the pair, naming the floating address and both balancers' own (docs/security.md).
        balancers = ",".join([cluster.floating, *(lab.address[host] for host in BALANCERS.values())])
        with_tls(cluster.file, run_dir / "certs", f"lb={balancers}",
                 {host: lab.address[host] for host in NODE_HOSTS.values()})
        cluster.start(timeout=240)
        yield Pair(lab, cluster, store)


def test_a_balancer_whose_jobs_service_keeps_dying_serves_jobs_from_its_peer(pair: Pair) -> None:
    lab, cluster, store = pair.lab, pair.cluster, pair.store
    holder = cluster.holder()
    assert holder is not None
    peer = next(name for name, host in BALANCERS.items() if host != holder)
    api = cluster.apis[holder]
    backup = f"{JOBS_BACKUP_PREFIX}{peer}"
    wait_until(lambda: {s.status for s in api.servers(JOBS_BACKEND)} == {"UP"},
               "every jobs service UP in the holder's HAProxy", 60, 0.2)
    servers_before = {s.server for s in api.servers(JOBS_BACKEND)}
    config = (cluster.run_dirs[holder] / "haproxy.cfg").read_text()
    backup_line = next(line for line in config.splitlines() if line.strip().startswith(f"server {backup} "))
    assert " ssl " in backup_line and "verify required" in backup_line, backup_line  # the peer over mutual TLS
    timeout = httpx.Timeout(FOLLOW, connect=5)
    clients = [StrictJobClient(httpx.Client(base_url=cluster.url, timeout=timeout), BODY, wait=30),
               StrictJobClient(httpx.Client(base_url=cluster.url, timeout=timeout), {**BODY, "seed": 500})]
    stop = threading.Event()
    threads = [threading.Thread(target=client.run_until, args=(stop, FOLLOW)) for client in clients]
    killer = JobsServiceKiller(lab, holder, HOLD)
    try:
        for thread in threads:
            thread.start()
        wait_until(lambda: all(client.jobs for client in clients), "each client's first job accepted", 30, 0.05)
        killer.start()
        killer.join(timeout=HOLD + 30)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=FOLLOW + 30)
        for client in clients:
            client.http.close()
    served_by_peer = sum(s.total_sessions for s in api.servers(JOBS_BACKEND) if s.server == backup)
    backend = next(row for row in api.show_stat() if row["pxname"] == JOBS_BACKEND and row["svname"] == "BACKEND")
    engine = create_engine(store, poolclass=NullPool)
    with engine.connect() as connection:
        stored = dict(connection.execute(select(jobs_table.c.status, func.count()).group_by(jobs_table.c.status))
                      .all())
    engine.dispose()

    requests = [request for client in clients for request in client.requests]
    views = [view for client in clients for view in client.jobs.values()]
    figures = {"kills": killer.kills, "hold_s": HOLD, "requests": len(requests), "jobs": len(views),
               "served_by_peer": served_by_peer, "haproxy_retries": int(backend["wretr"] or 0),
               "haproxy_redispatches": int(backend["wredis"] or 0),
               "slowest_request_s": round(max(r.seconds for r in requests), 2),
               "most_attempts": max(view.get("attempts", 0) for view in views), "load_average": os.getloadavg()}
    record_figures(ARTIFACT, "jobs-service-killed", figures)
    print(f"\njobs service of {holder} SIGKILLed {killer.kills} times in {HOLD:g} s: {len(requests)} requests, "
          f"{len(views)} jobs; {served_by_peer} sessions served by {peer}'s jobs service; {figures}")

    failed = [request for request in requests if not request.ok]
    assert not failed, f"{len(failed)} of {len(requests)} requests failed: {failed[:5]}"
    assert servers_before == {JOBS_SERVER, backup}  # its own, and the peer's as a backup
    assert killer.kills >= 2, "the jobs service was not killed repeatedly: the test proved nothing"
    assert served_by_peer > 0, "no request went to the peer's jobs service"
    during = [r for r in requests if killer.started_at <= r.started + r.seconds and r.started <= killer.ended_at]
    assert len(during) >= 10, f"only {len(during)} requests overlapped the kills: the test proved little"
    assert [view["status"] for view in views] == ["succeeded"] * len(views), views
    assert stored == {"succeeded": len(views)}  # one job per key, none lost, none twice


def sessions(cluster: PairCluster, host: str, server: str) -> int:
    """Requests balancer ``host``'s HAProxy passed to ``server`` of its jobs backend."""
    return sum(s.total_sessions for s in cluster.apis[host].servers(JOBS_BACKEND) if s.server == server)


def test_the_image_past_the_daily_quota_is_refused_on_the_peer_after_the_holder_died(pair: Pair) -> None:
    cluster = pair.cluster
    holder = cluster.holder()
    assert holder is not None
    peer = next(host for host in BALANCERS.values() if host != holder)
    holder_backup = JOBS_BACKUP_PREFIX + next(name for name, host in BALANCERS.items() if host == peer)
    retry_jobs_service(pair.lab, holder, cluster.file)  # the test before held it down as crash-looping
    wait_until(lambda: {s.status for s in cluster.apis[holder].servers(JOBS_BACKEND) if s.server == JOBS_SERVER}
               == {"UP"}, "the holder's own jobs service UP", 60, 0.2)
    for args in (["create", "pair-quota"], ["set-limits", "pair-quota", "--daily-images", str(DAILY)]):
        assert accounts_cli(pair.store, *args).returncode == 0
    key = accounts_cli(pair.store, "create-key", "pair-quota", "--scope=generate").stdout.strip()
    with httpx.Client(base_url=cluster.url, headers={"Authorization": f"Bearer {key}"},
                      timeout=httpx.Timeout(FOLLOW, connect=2)) as http:
        own, backup = sessions(cluster, holder, JOBS_SERVER), sessions(cluster, holder, holder_backup)
        accepted = [http.post("/v1/jobs", json=BODY).status_code for _ in range(DAILY)]
        counted_by_holder = sessions(cluster, holder, JOBS_SERVER) - own
        holder_passed_on = sessions(cluster, holder, holder_backup) - backup
        peer_before = sessions(cluster, peer, JOBS_SERVER)
        cluster.kill_balancer(holder)
        client = Retrying(http, budget=FOLLOW)  # a client of a lost balancer sends again until one answers
        refused = client.request("POST", "/v1/jobs", check=lambda r: r.status_code not in RETRYABLE_STATUSES,
                                 json=BODY)
    figures = {"answer_after_kill_s": round(client.outcomes[0].seconds, 2), "attempts": client.outcomes[0].attempts,
               "load_average": os.getloadavg()}
    record_figures(ARTIFACT, "quota-after-failover", figures)
    print(f"\n{DAILY} images through {holder}, killed; the next through {peer}: {figures}")

    assert accepted == [202] * DAILY
    assert counted_by_holder == DAILY and holder_passed_on == 0, "the holder's own jobs service took them"
    assert pair.lab.has_address(peer, cluster.floating)
    assert refused is not None, client.outcomes
    assert refused.status_code == 429, refused.text
    assert sessions(cluster, peer, JOBS_SERVER) > peer_before, "the peer's own jobs service answered"
    assert refused.json()["detail"] == f"Daily quota of {DAILY} images reached; resets at 00:00 UTC."
    wait = int(refused.headers["Retry-After"])
    assert 0 < wait <= 86_400
    assert refused.headers["RateLimit-Policy"] == f'"daily";q={DAILY};w=86400'
    assert refused.headers["RateLimit"] == f'"daily";r=0;t={wait}'
