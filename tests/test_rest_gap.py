"""The default REST path across a gap with no worker (issue 21, fault 5): both workers SIGKILLed at the same moment
under REST load, with ``jobs.rest`` off (the default). A client that resends as docs/api.md advises (0.5 s, 1 s, 2 s,
then every 2 s) gets every image; what it resent was only what the advice names for this gap: HAProxy's 503 "No worker
is up" (nothing ran), or a connection closed without an answer (a job in flight whose worker died with it: HAProxy's
retries found no server left, and it closes a reused client connection so, telling the client it may resend:
haproxy/haproxy#2375), never a 502, a 500 or another answer. (With ``jobs.rest`` on, the same requests wait for the
next ready worker instead: ``tests/test_jobs_failover.py``.)

One stand-in cluster (2 nodes, 0.3 s a job): ``flock /tmp/ph-cluster.lock python -m pytest -q tests/test_rest_gap.py``.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator

import pytest

from bench.harness.clients import Job, RestClient
from bench.harness.cluster import ClusterOptions, LaunchedCluster
from bench.harness.load import OK, Clock, LoadClient, LoadRunner, Record
from bench.harness.resends import RESEND_PAUSES, advised_call
from bench.harness.waiting import wait_until

NODES = ("node1", "node2")
WAIT = 60.0
"""Bound (seconds) on anything the test waits for."""
PAUSES = (*RESEND_PAUSES, *[2.0] * 14)
"""docs/api.md's resends, then every 2 s: 31.5 s in all, far beyond a stand-in worker's restart."""
RESENDABLE = ("CallFailed: HTTP 503: No worker is up", "CallFailed: RemoteProtocolError: Server disconnected without")
"""The first tries this gap may cost: the cluster's 503 while no worker is up; a job in flight on a killed worker."""


@pytest.fixture(scope="module")
def cluster() -> Iterator[LaunchedCluster]:
    options = ClusterOptions(model="standin:0.3", nodes=len(NODES), start_timeout=120,
                             sidecar={"probe_interval": 0.2, "backoff_initial": 0.2})
    with LaunchedCluster(options, name="rest-gap") as launched:
        yield launched


def test_both_workers_killed_refuse_rest_as_retryable_and_resends_lose_nothing(cluster: LaunchedCluster) -> None:
    assert not cluster.spec.rest_via_jobs  # the default path: straight to the workers' queue
    clock = Clock()
    rest = [RestClient(cluster.public_url, timeout=WAIT) for _ in range(2)]
    clients = [LoadClient(f"rest{n}", lambda i, n=n: advised_call(
        clock, f"rest{n}", "rest", lambda: rest[n].generate_unhashed(
            Job(prompt=f"gap {n} {i}", steps=2, width=64, height=64, seed=7000 + 100 * n + i)), pauses=PAUSES))
        for n in range(2)]
    runner = LoadRunner(clients, duration=120)
    load = threading.Thread(target=runner.run)
    load.start()
    try:
        wait_until(lambda: all(client.records for client in clients), "every client served once", WAIT)
        before = {node: cluster.part_status(node, "worker") for node in NODES}
        killed_at = clock.now()
        for node in NODES:  # the same moment: no worker is left to take a job
            os.kill(before[node]["pid"], signal.SIGKILL)
        for node in NODES:
            cluster.wait_restarted(node, "worker", before[node]["restarts"] + 1, timeout=WAIT)
        ready_at = clock.now()
        wait_until(lambda: all(r.start > ready_at for c in clients for r in c.records[-1:]), "calls after", WAIT)
    finally:
        runner.stop.set()
        load.join(timeout=WAIT)
        for client in rest:
            client.close()
    records: list[Record] = [record for client in clients for record in client.records]
    assert [r for r in records if r.outcome != OK] == []
    across = [r for r in records if r.start < ready_at and r.end > killed_at]
    assert across, "no request was in flight while both workers were down: the test proved nothing"
    refused = [r.detail for r in records if r.attempts > 1]
    print(f"\n{len(records)} REST requests, {len(across)} across the gap, {len(refused)} resent; "
          f"load {os.getloadavg()}")
    assert all(detail.startswith(RESENDABLE) for detail in refused), refused
