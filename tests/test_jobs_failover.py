"""No capacity gap fails a request (issue 20 item 7, issue 21 fault 5), on the default paths: REST straight to the
workers, which record each generation as a job, and the web fronts running theirs through the jobs service. Both
workers SIGKILLed at the same moment under REST + gradio_client load cost no request and no resend:

- a REST job in flight on a killed worker is replayed by HAProxy on the workers backend's backup, this host's jobs
  service, which takes over the very job the worker recorded (same id, attempt 2, same seed) and holds it until
  the next worker is ready;
- a REST request sent inside the gap goes to the jobs service (``nbsrv(worker_probes) eq 0``), held the same way;
- a gradio_client call is a job of the jobs service, which waits for the next worker.

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

from bench.harness.generation import Job, Reply
from bench.harness.launched_cluster import LaunchedCluster
from bench.harness.load import OK, Clock, LoadClient, LoadRunner, Record, timed_call
from bench.harness.rest_client import RestClient
from bench.harness.waiting import wait_until
from tests.suite_cluster import suite_options
from webui.contract import READY_PATH

NODES = ("node1", "node2")
WAIT = 60.0
"""Bound (seconds) on anything a test waits for."""


@pytest.fixture(scope="module")
def cluster() -> Iterator[LaunchedCluster]:
    options = suite_options(model="standin:0.5", nodes=len(NODES), start_timeout=120,
                            sidecar={"probe_interval": 0.2, "backoff_initial": 0.2})
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
    job = finished_job(cluster, job_id)  # its worker sends the result after its answer
    assert job["status"] == "succeeded" and job["input"]["seed"] == small_job(0).seed
    assert job["results"][0]["sha256"] == hashlib.sha256(image).hexdigest()


def finished_job(cluster: LaunchedCluster, job_id: str) -> dict:
    def read() -> dict | None:
        job = httpx.get(f"{cluster.public_url}/v1/jobs/{job_id}", timeout=WAIT).json()
        return job if job["status"] in ("succeeded", "failed", "canceled") else None
    return wait_until(read, f"job {job_id} finished", WAIT)


def no_worker_up(public: httpx.Client) -> bool:
    """HAProxy's own count, as its public readiness says it: no worker up (the web fronts stay up here)."""
    return public.get(READY_PATH).status_code == 503


def test_both_workers_sigkilled_at_once_under_load_fail_no_request(cluster: LaunchedCluster, tmp_path: Path) -> None:
    assert cluster.spec.jobs.enabled and not cluster.spec.rest_via_jobs  # the default: REST straight to the workers
    clock = Clock()
    rest = [RestClient(cluster.public_url, timeout=120) for _ in range(3)]
    jobs: list[str] = []  # the REST load's jobs (X-Job-Id: their worker, or the jobs service, recorded each)

    def rest_call(n: int, i: int) -> Reply:
        reply = rest[n].generate_unhashed(small_job(100 * (n + 1) + i))
        jobs.extend([reply.job_id] if reply.job_id else [])
        return reply

    gradio = Client(cluster.public_url, verbose=False, download_files=str(tmp_path))
    clients = [LoadClient(f"rest{n}", lambda i, n=n: timed_call(clock, f"rest{n}", "rest", True,
                                                                 lambda: rest_call(n, i))) for n in range(2)]
    clients.append(LoadClient("gradio", lambda i: timed_call(
        clock, "gradio", "gradio_client", True, lambda: gradio_call(gradio, small_job(900 + i)))))
    runner = LoadRunner(clients, duration=120)
    load = threading.Thread(target=runner.run)
    load.start()
    try:
        wait_until(lambda: all(client.records for client in clients), "every client served once", WAIT)
        wait_until(lambda: len(cluster.busy_workers(WAIT)) == len(NODES), "a job in flight on each worker", WAIT)
        before = {node: cluster.part_status(node, "worker") for node in NODES}
        killed_at = clock.now()
        for node in NODES:  # the same moment: no worker is left to take a job
            os.kill(before[node]["pid"], signal.SIGKILL)
        with httpx.Client(base_url=cluster.public_url, timeout=WAIT) as public:
            wait_until(lambda: no_worker_up(public), "HAProxy counting no worker up", WAIT)
        # Sent inside the gap: held by the jobs service until a worker is ready, then answered.
        inside = rest[2].generate(Job(prompt="inside the gap", steps=2, width=64, height=64, seed=6999))
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
    assert inside.seed == 6999 and inside.job_id, inside
    # The REST jobs in flight at the kill: each the same job its worker recorded, taken over by the jobs service.
    replayed = [job for job_id in jobs if (job := finished_job(cluster, job_id))["attempts"] > 1]
    print(f"\n{len(records)} requests, {len(across)} across the gap, {len(replayed)} REST jobs taken over by the jobs "
          f"service; load {os.getloadavg()}")
    assert replayed and all(job["status"] == "succeeded" and job["attempts"] == 2 for job in replayed), replayed
