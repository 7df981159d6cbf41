"""The default REST path across a gap with no worker (issue 20 item 7, issue 21 fault 5): both workers SIGKILLed at
the same moment under REST load, with ``jobs.rest`` off (the default) and the jobs service running (the default).

No request fails and none needs a resend. A job in flight on a killed worker is replayed by HAProxy (``retry-on``)
on the workers backend's backup, this host's jobs service, which takes over the very job the worker recorded (same
id, attempt 2, same seed) and holds it until the next worker is ready; a request sent inside the gap goes to the
jobs service too (``nbsrv(worker_probes) eq 0``) and is held the same way. (With ``jobs.rest`` on, every request
waits in the jobs service: ``tests/test_jobs_failover.py``.)

One stand-in cluster (2 nodes, 0.3 s a job): ``flock /tmp/ph-cluster.lock python -m pytest -q tests/test_rest_gap.py``.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator

import httpx
import pytest

from bench.harness.cluster_options import ClusterOptions
from bench.harness.generation import Job, Reply
from bench.harness.launched_cluster import LaunchedCluster
from bench.harness.load import OK, Clock, LoadClient, LoadRunner, Record
from bench.harness.resends import RESEND_PAUSES, advised_call
from bench.harness.rest_client import RestClient
from bench.harness.waiting import wait_until
from webui.contract import READY_PATH

NODES = ("node1", "node2")
WAIT = 60.0
"""Bound (seconds) on anything the test waits for."""
PAUSES = (*RESEND_PAUSES, *[2.0] * 14)
"""docs/api.md's resends, then every 2 s: 31.5 s in all, far beyond a stand-in worker's restart (the test asserts
that none was needed; a resend shows what went wrong instead of hiding it behind a failure)."""


@pytest.fixture(scope="module")
def cluster() -> Iterator[LaunchedCluster]:
    options = ClusterOptions(model="standin:0.3", nodes=len(NODES), start_timeout=120,
                             sidecar={"probe_interval": 0.2, "backoff_initial": 0.2})
    with LaunchedCluster(options, name="rest-gap") as launched:
        yield launched


def no_worker_up(public: httpx.Client) -> bool:
    """HAProxy's own count, as its public readiness says it: no worker up (the web fronts stay up here)."""
    return public.get(READY_PATH).status_code == 503


def test_both_workers_killed_under_rest_load_no_request_fails_and_none_is_resent(cluster: LaunchedCluster) -> None:
    assert cluster.spec.jobs.enabled and not cluster.spec.rest_via_jobs  # the default: straight to the workers
    clock = Clock()
    rest = [RestClient(cluster.public_url, timeout=WAIT) for _ in range(3)]
    jobs: list[str] = []  # the load's jobs (X-Job-Id: its worker, or the jobs service, recorded each)

    def generate(n: int, i: int) -> Reply:
        reply = rest[n].generate_unhashed(Job(prompt=f"gap {n} {i}", steps=2, width=64, height=64,
                                              seed=7000 + 100 * n + i))
        jobs.extend([reply.job_id] if reply.job_id else [])
        return reply

    clients = [LoadClient(f"rest{n}", lambda i, n=n: advised_call(clock, f"rest{n}", "rest", lambda: generate(n, i),
                                                                   pauses=PAUSES)) for n in range(2)]
    runner = LoadRunner(clients, duration=120)
    load = threading.Thread(target=runner.run)
    load.start()
    try:
        with httpx.Client(base_url=cluster.public_url, timeout=WAIT) as public:
            wait_until(lambda: all(client.records for client in clients), "every client served once", WAIT)
            wait_until(lambda: len(cluster.busy_workers(WAIT)) == len(NODES), "a job in flight on each worker", WAIT)
            before = {node: cluster.part_status(node, "worker") for node in NODES}
            killed_at = clock.now()
            for node in NODES:  # the same moment: no worker is left to take a job
                os.kill(before[node]["pid"], signal.SIGKILL)
            wait_until(lambda: no_worker_up(public), "HAProxy counting no worker up", WAIT)
            # Sent inside the gap, no resend: held by the jobs service until a worker is ready, then answered.
            inside = rest[2].generate(Job(prompt="inside the gap", steps=2, width=64, height=64, seed=6999))
        for node in NODES:
            cluster.wait_restarted(node, "worker", before[node]["restarts"] + 1, timeout=WAIT)
        ready_at = clock.now()
        wait_until(lambda: all(r.start > ready_at for c in clients for r in c.records[-1:]), "calls after", WAIT)
    finally:
        runner.stop.set()
        load.join(timeout=WAIT)
        for client in rest:
            client.close()
    assert inside.seed == 6999 and inside.job_id, inside  # the jobs service made it: X-Job-Id names its job
    records: list[Record] = [record for client in clients for record in client.records]
    assert [r for r in records if r.outcome != OK] == []
    across = [r for r in records if r.start < ready_at and r.end > killed_at]
    assert across, "no request was in flight while both workers were down: the test proved nothing"
    resent = [r for r in records if r.attempts > 1]
    replayed = [job for job in (public_job(cluster, job_id) for job_id in jobs) if job["attempts"] > 1]
    print(f"\n{len(records)} REST requests, {len(across)} across the gap, {len(replayed)} taken over by the jobs "
          f"service, {len(resent)} resent: {[r.detail for r in resent]}; load {os.getloadavg()}")
    assert resent == [], resent
    # The jobs in flight at the kill: each the same job its worker recorded, finished by the jobs service's hold.
    assert replayed and all(job["status"] == "succeeded" and job["attempts"] == 2 for job in replayed), replayed


def public_job(cluster: LaunchedCluster, job_id: str) -> dict:
    return httpx.get(f"{cluster.public_url}/v1/jobs/{job_id}", timeout=10).json()
