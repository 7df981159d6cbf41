"""No capacity gap fails a request: with REST (``jobs.rest``) and the web fronts (``jobs.web_fronts``) going through
the jobs service, both workers SIGKILLed at the same moment under REST + gradio_client load cost no request; the
accepted jobs wait for the next ready worker (bounded by their own wait) instead of answering 503.

One stand-in cluster (2 nodes, 0.5 s a job). Run under the cluster lock:
``flock /tmp/ph-cluster.lock python -m pytest -q tests/test_jobs_failover.py``.
"""

from __future__ import annotations

import base64
import hashlib
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from gradio_client import Client

from bench.harness.cluster_options import ClusterOptions
from bench.harness.generation import Job, Reply
from bench.harness.launched_cluster import LaunchedCluster
from bench.harness.load import OK, Clock, LoadClient, LoadRunner, Record, timed_call
from bench.harness.rest_client import RestClient
from bench.harness.waiting import wait_until

NODES = ("node1", "node2")
WAIT = 60.0
"""Bound (seconds) on anything a test waits for."""


@pytest.fixture(scope="module")
def cluster() -> Iterator[LaunchedCluster]:
    options = ClusterOptions(model="standin:0.5", nodes=len(NODES), start_timeout=120,
                             sidecar={"probe_interval": 0.2, "backoff_initial": 0.2},
                             extra={"jobs": {"rest": True, "web_fronts": True}})
    with LaunchedCluster(options, name="jobs-failover") as launched:
        launched.wait_jobs_ready()
        yield launched


def small_job(index: int) -> Job:
    return Job(prompt=f"studio portrait {index}", steps=2, width=64, height=64, seed=3000 + index)


def gradio_call(client: Client, job: Job) -> Reply:
    """One generation through a web front (which runs it as a job), as a load record's reply."""
    _gallery, info = client.predict(prompt=job.prompt, steps=job.steps, width=job.width, height=job.height,
                                    seed=job.seed, api_name="/generate")
    assert info["seed"] == job.seed and info["job_id"], info
    return Reply(info["seed"], job.width, job.height, info.get("worker_id") or info["job_id"])


def test_a_rest_generation_is_a_recorded_job_named_in_its_answer(cluster: LaunchedCluster) -> None:
    answer = httpx.post(f"{cluster.public_url}/generate", json=small_job(0).rest_body(), timeout=WAIT)
    assert answer.status_code == 200, answer.text
    job_id = answer.headers["x-job-id"]
    image = base64.b64decode(answer.json()["images"][0])
    job = httpx.get(f"{cluster.public_url}/v1/jobs/{job_id}", timeout=WAIT).json()
    assert job["status"] == "succeeded" and job["input"]["seed"] == small_job(0).seed
    assert job["results"][0]["sha256"] == hashlib.sha256(image).hexdigest()


def test_both_workers_sigkilled_at_once_under_load_fail_no_request(cluster: LaunchedCluster, tmp_path: Path) -> None:
    clock = Clock()
    rest = [RestClient(cluster.public_url, timeout=120) for _ in range(2)]
    gradio = Client(cluster.public_url, verbose=False, download_files=str(tmp_path))
    clients = [LoadClient(f"rest{n}", lambda i, n=n: timed_call(
        clock, f"rest{n}", "rest", True, lambda: rest[n].generate_unhashed(small_job(100 * (n + 1) + i))))
        for n in range(2)]
    clients.append(LoadClient("gradio", lambda i: timed_call(
        clock, "gradio", "gradio_client", True, lambda: gradio_call(gradio, small_job(900 + i)))))
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
        served = sum(len(client.records) for client in clients)
        wait_until(lambda: sum(len(c.records) for c in clients) >= served + 6, "more requests", WAIT)
    finally:
        runner.stop.set()
        load.join(timeout=WAIT)
        gradio.close()
    records: list[Record] = [record for client in clients for record in client.records]
    failed = [record for record in records if record.outcome != OK]
    assert not failed, f"{len(failed)} of {len(records)} requests failed: {failed[:3]}"
    across = [record for record in records if record.start < ready_at and record.end > killed_at]
    assert across, "no request was in flight while both workers were down: the test proved nothing"
    for node in NODES:
        entry = cluster.part_status(node, "worker")
        assert entry["last_cause"] == "signal" and "SIGKILL" in entry["last_detail"]
    assert not load.is_alive()
