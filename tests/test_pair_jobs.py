"""Many balancers, one truth: a balancer whose jobs service keeps dying still serves /v1/jobs, from its peer's.

Two balancer hosts share a floating address and one PostgreSQL job store (``bench.harness.pair``; a real
PostgreSQL on the lab's subnet, ``bench.harness.postgres``); two node hosts run fixed-latency stand-in workers.
Each balancer's HAProxy lists the other balancer's jobs service as a ``backup`` server of its ``jobs`` backend
(``balancer.config.jobs_peers``). While two clients submit jobs through the floating address (one holding each
answer with ``Prefer: wait``, one reading its job until it ends), the holder's jobs service is SIGKILLed each
time it runs, for ``HOLD`` seconds (its sidecar restarts it, then holds it down as crash-looping). Checked: every
request succeeded (no client retry: HAProxy replays a read, or a submission with an ``Idempotency-Key``, whose
service died unanswered, on the peer once the local one is down); every job ended succeeded, and the store holds
one job per key; the peer's service did serve through the holder's HAProxy.

Root only, with ``ip``, Debian's ``iptables``, ``keepalived`` and PostgreSQL 15; select with ``-m hosts``.
"""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.pool import NullPool

from balancer.config.loading import load_cluster_file
from balancer.haproxy.names import JOBS_BACKEND, JOBS_BACKUP_PREFIX, JOBS_SERVER
from bench.harness.hosts import JOB, STANDIN_WORKER
from bench.harness.netns import NetworkLab, missing_for_labs
from bench.harness.pair import BALANCERS, LAB_HOSTS, PairCluster
from bench.harness.pair_jobs import JobsServiceKiller, StrictJobClient
from bench.harness.postgres import BIN, PostgresServer
from bench.harness.processes import REPO, Processes
from bench.harness.waiting import wait_until
from jobs.store.schema import jobs as jobs_table
from tests.helpers import record_figures, unquotable_checkout


def _missing() -> str | None:
    if shutil.which("keepalived") is None:
        return "the pair test needs Debian's keepalived (scripts/setup.sh --dev as root installs it)"
    if not (BIN / "initdb").is_file():
        return f"the pair jobs test needs PostgreSQL 15's server binaries in {BIN}"
    return unquotable_checkout() or missing_for_labs()


pytestmark = [pytest.mark.hosts, pytest.mark.skipif(_missing() is not None, reason=_missing() or "")]

ARTIFACT = REPO / "test-artifacts" / "pair-jobs.json"
EXAMPLE = load_cluster_file(REPO / "assets" / "cluster.pair.example.yaml")
HEALTH = {**EXAMPLE["health"], "slowstart": 0}
ADVERT = EXAMPLE["floating"]["advert_interval"]
HOLD = 8.0
"""Seconds the holder's jobs service is killed whenever it runs."""
FOLLOW = 60.0
"""Bound (seconds) on one job, submission to end: a job its dead service held waits out its lease (10 s)."""
BODY = {**JOB, "steps": 2, "width": 256, "height": 256}


def test_a_balancer_whose_jobs_service_keeps_dying_serves_jobs_from_its_peer(tmp_path: Path) -> None:
    with (Processes("pair-jobs") as processes, NetworkLab(LAB_HOSTS, processes) as lab,
          PostgresServer(lab.client_address) as postgres):
        store = postgres.create_database()
        cluster = PairCluster(lab, tmp_path, HEALTH, ADVERT, worker_args=STANDIN_WORKER, jobs={"store_url": store})
        cluster.start(timeout=240)
        holder = cluster.holder()
        assert holder is not None
        peer = next(name for name, host in BALANCERS.items() if host != holder)
        api = cluster.apis[holder]
        backup = f"{JOBS_BACKUP_PREFIX}{peer}"
        wait_until(lambda: {s.status for s in api.servers(JOBS_BACKEND)} == {"UP"},
                   "every jobs service UP in the holder's HAProxy", 60, 0.2)
        servers_before = {s.server for s in api.servers(JOBS_BACKEND)}
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
