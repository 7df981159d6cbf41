"""The jobs service end to end: ``python -m jobs`` (API + dispatcher, SQLite in a temp dir, or a real PostgreSQL)
in front of real stand-in workers (``python -m webui.worker --model standin:SECONDS``), behind the cluster secret.

Run under the cluster lock: ``flock /tmp/ph-cluster.lock python -m pytest -q tests/test_jobs_api.py``. Durations
come from the stand-in's fixed latency, not the CPU; the bounds on waits are generous.
"""

from __future__ import annotations

import base64
import hashlib
import io
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from bench.harness.postgres import PostgresServer
from bench.harness.processes import Processes
from bench.harness.waiting import wait_until
from jobs.store import cancel, make_engine, submit, sweep_expired
from jobs.store.records import utc_now
from tests.jobs_service import JOB, PART, SECRET, WAIT, Site, events, ready, start_site
from webui.contract import CLUSTER_SECRET_ENV

REFUSED = "no worker took the job (attempt 1: connection to the worker failed"
"""The service's log line when a job's first attempt meets a worker that is down."""
SLOW_SECONDS = 5.0
"""The slow site's stand-in job: long enough that a kill or a cancel after its second step comes mid-job."""


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Site]]:
    """The main site (stand-in 0.5 s a job) and a slow one (``SLOW_SECONDS`` a job: a job to cancel or kill
    mid-way), started together. The PostgreSQL site starts on first use."""
    store = tmp_path_factory.mktemp("jobs")
    with Processes("jobs-api") as processes:
        started = {"main": start_site(processes, "main", f"sqlite:///{store / 'main.sqlite3'}", 0.5),
                   "slow": start_site(processes, "slow", f"sqlite:///{store / 'slow.sqlite3'}", SLOW_SECONDS)}
        yield {"main": ready(started["main"]), "slow": ready(started["slow"], "/healthz")}


@pytest.fixture(scope="module")
def postgres_site() -> Iterator[Site]:
    with PostgresServer() as server, Processes("jobs-api-pg") as processes:
        yield ready(start_site(processes, "pg", server.create_database(), 0.5))


@pytest.fixture
def site(sites: dict[str, Site]) -> Site:
    return sites["main"]


def result_bytes(site: Site, job: dict[str, Any]) -> tuple[bytes, str]:
    answer = site.get(job["output"][0])
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
    assert "immutable" in answer.headers["cache-control"]
    return answer.content, answer.headers["etag"]


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_a_job_is_accepted_then_succeeds_with_its_seeds_image(store: str, request: pytest.FixtureRequest) -> None:
    site = request.getfixturevalue("site" if store == "sqlite" else "postgres_site")
    body = {**JOB, "seed": 4242}
    accepted = site.post(body)
    assert accepted.status_code == 202, accepted.text
    ack = accepted.json()
    assert ack["status"] == "starting" and ack["urls"]["get"] == f"/v1/jobs/{ack['id']}"
    job = site.finished(ack["id"])
    assert job["status"] == "succeeded", job
    data, etag = result_bytes(site, job)
    digest = hashlib.sha256(data).hexdigest()
    assert etag == f'"{digest}"' and job["results"][0]["sha256"] == digest
    assert site.get(job["output"][0], **{"If-None-Match": etag}).status_code == 304
    again = site.finished(site.post(body).json()["id"])
    direct = httpx.post(f"{site.worker.url}/generate", json=body, headers={"X-Portrait-Cluster": SECRET[
        CLUSTER_SECRET_ENV]}, timeout=WAIT).json()
    assert again["results"][0]["sha256"] == digest == hashlib.sha256(base64.b64decode(direct["images"][0])).hexdigest()
    listed = site.get("/v1/jobs?limit=1").json()
    assert [entry["id"] for entry in listed["jobs"]] == [again["id"]]
    assert site.get(listed["next"]).json()["jobs"][0]["id"] == job["id"]


def test_a_retouchs_photo_is_shown_as_the_url_of_its_bytes_not_as_base64(site: Site) -> None:
    """A job's JSON (its listing, its webhook body) names a retouch's photo by URL: a page of 100 retouch jobs is not
    100 photos of base64. The URL gives the very bytes sent; a job without a photo answers 404 there."""
    photo = io.BytesIO()
    Image.fromarray(np.random.default_rng(5).integers(0, 256, (96, 128, 3), dtype=np.uint8)).save(photo, "JPEG")
    sent = photo.getvalue()
    job = site.finished(site.post({**JOB, "init_image": base64.b64encode(sent).decode(), "strength": 0.5}).json()["id"])
    assert job["status"] == "succeeded", job
    assert job["input"]["init_image"] == f"/v1/jobs/{job['id']}/input" and job["input"]["strength"] == 0.5
    assert site.get("/v1/jobs?limit=1").json()["jobs"][0]["input"]["init_image"] == job["input"]["init_image"]
    answer = site.get(job["input"]["init_image"])
    assert answer.status_code == 200 and answer.content == sent and answer.headers["content-type"] == "image/jpeg"
    assert answer.headers["etag"] == f'"{hashlib.sha256(sent).hexdigest()}"'
    assert site.get(job["input"]["init_image"], **{"If-None-Match": answer.headers["etag"]}).status_code == 304
    plain = site.finished(site.post(JOB).json()["id"])
    missing = site.get(f"/v1/jobs/{plain['id']}/input")
    assert "init_image" not in plain["input"] and missing.status_code == 404, missing.text
    assert missing.json()["error"] == "photo_not_found" and plain["id"] in missing.json()["detail"]


def test_prefer_wait_answers_with_the_finished_job_or_202(site: Site) -> None:
    started = time.monotonic()
    finished = site.post(JOB, Prefer="wait=30")
    assert finished.status_code == 201 and finished.json()["status"] == "succeeded", finished.text
    assert finished.json()["output"] and time.monotonic() - started < 30
    short = site.post(JOB, Prefer="wait=0.05")
    assert short.status_code == 202 and short.json()["status"] in ("starting", "processing")
    assert site.finished(short.json()["id"])["status"] == "succeeded"


def test_the_same_idempotency_key_and_body_run_one_generation(site: Site) -> None:
    before = site.worker_jobs()
    key = {"Idempotency-Key": f"portrait-{time.time_ns()}"}
    first = site.post(JOB, **key)
    second = site.post(JOB, **key, Prefer="wait=30")
    assert (first.status_code, second.status_code) == (202, 200), second.text
    assert second.json()["id"] == first.json()["id"] and second.json()["status"] == "succeeded"
    assert site.post(JOB, **key).json()["id"] == first.json()["id"]
    assert site.worker_jobs() - before == 1
    by_key = site.get(f"/v1/jobs?key={key['Idempotency-Key']}").json()["jobs"]  # how a web front finds it again
    assert [job["id"] for job in by_key] == [first.json()["id"]]
    assert site.get("/v1/jobs?key=portrait-none").json()["jobs"] == []
    other = site.post({**JOB, "prompt": "another portrait"}, **key)
    assert other.status_code == 422 and other.json()["error"] == "idempotency_conflict"
    assert first.json()["id"] in other.json()["detail"]
    too_long = site.post(JOB, **{"Idempotency-Key": "k" * 65})
    assert too_long.status_code == 422 and too_long.json()["fields"][0]["field"] == "Idempotency-Key"


def test_events_come_in_order_and_resume_after_last_event_id(site: Site) -> None:
    job_id = site.post(JOB).json()["id"]
    seen = events(site, job_id)
    names = [event["event"] for event in seen]
    assert names[:2] == ["queued", "started"] and names[-1] == "result", names
    steps = [event["data"]["step"] for event in seen if event["event"] == "progress"]
    assert steps == sorted(steps) and steps[-1] == JOB["steps"], steps
    ids = [int(event["id"]) for event in seen if "id" in event]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert seen[-1]["data"]["status"] == "succeeded" and seen[-1]["data"]["output"]
    middle = ids[len(ids) // 2]
    resumed = events(site, job_id, **{"Last-Event-ID": str(middle)})
    assert [int(event["id"]) for event in resumed] == [i for i in ids if i > middle]
    assert events(site, job_id, **{"Last-Event-ID": str(ids[-1])}) == []


def test_a_service_killed_mid_job_and_restarted_finishes_it_once(sites: dict[str, Site]) -> None:
    slow = sites["slow"]  # SLOW_SECONDS a job, over 100 steps: the kill surely comes mid-job
    slow.worker.ready("/readyz")
    job_id = slow.post({**JOB, "steps": 100, "seed": 77}).json()["id"]
    slow.until(job_id, lambda job: (job["progress"] or {}).get("step", 0) >= 2, "the job ran two steps")
    slow.service.kill()
    slow.service.start().ready("/healthz")
    job = slow.finished(job_id)
    assert job["status"] == "succeeded" and job["attempts"] == 2, job
    statuses = [event["data"]["status"] for event in events(slow, job_id) if event["event"] != "progress"]
    assert statuses.count("succeeded") == 1 and statuses.count("processing") == 2, statuses
    assert len(job["results"]) == 1


def test_jobs_wait_while_the_worker_is_down_and_succeed_when_it_is_back(site: Site) -> None:
    site.worker.kill()
    refused = site.service.log().count(REFUSED)
    waiting = [site.post({**JOB, "seed": seed}).json()["id"] for seed in (1, 2)]
    wait_until(lambda: site.service.log().count(REFUSED) > refused, "an attempt that meets the worker down", WAIT,
               interval=0.05)
    assert {site.job(job_id)["status"] for job_id in waiting} <= {"starting", "processing"}
    site.worker.start().ready("/readyz")
    assert [site.finished(job_id)["status"] for job_id in waiting] == ["succeeded", "succeeded"]


def test_errors_are_answered_in_words(site: Site) -> None:
    unknown = site.get("/v1/jobs/j_doesnotexist")
    assert unknown.status_code == 404 and unknown.json()["error"] == "job_not_found"
    assert "There is no job" in unknown.json()["detail"]
    invalid = site.post({"prompt": " ", "steps": 0, "colour": "red"})
    assert invalid.status_code == 422 and invalid.json()["error"] == "invalid_request"
    assert {problem["field"] for problem in invalid.json()["fields"]} == {"steps", "colour"}
    hook = site.post({**JOB, "webhook": "https://127.0.0.1/hook"})
    assert hook.status_code == 422 and hook.json()["fields"][0]["field"] == "webhook"
    assert "refused" in hook.json()["detail"]
    large = site.post({**JOB, "prompt": "x" * 70_000})
    assert large.status_code == 413 and large.json()["error"] == "body_too_large"
    engine = make_engine(site.store_url)
    try:
        gone, _ = submit(engine, {"prompt": "expired"}, retention=timedelta(0))
        cancel(engine, gone.id)
        assert sweep_expired(engine, now=utc_now()) >= 1
    finally:
        engine.dispose()
    expired = site.get(f"/v1/jobs/{gone.id}")
    assert expired.status_code == 410 and expired.json()["error"] == "job_expired"
    assert "expired" in expired.json()["detail"]
    finished_job = site.job(site.post(JOB, Prefer="wait=30").json()["id"])
    missing = site.get(f"/v1/jobs/{finished_job['id']}/results/5")
    assert missing.status_code == 404 and "numbered 0 to 0" in missing.json()["detail"]
    assert isinstance(datetime.fromisoformat(finished_job["completed_at"]), datetime)


def test_cancel_stops_a_running_job_and_frees_its_worker(sites: dict[str, Site]) -> None:
    slow = sites["slow"]
    slow.worker.ready("/readyz")
    cancelled_before = slow.worker_jobs("cancelled")
    busy = {**JOB, "steps": 100}  # SLOW_SECONDS over 100 steps: the worker sees a cancel at its next step
    running = slow.post(busy).json()["id"]
    slow.until(running, lambda job: (job["progress"] or {}).get("step", 0) >= 2, "the job ran two steps")
    asked = time.monotonic()
    assert slow.get(f"/v1/jobs/{running}").json()["status"] == "processing"
    answer = httpx.post(f"{slow.service.url}/v1/jobs/{running}/cancel", headers=PART, timeout=WAIT)
    assert answer.status_code == 200 and answer.json()["status"] in ("processing", "canceled")
    following = slow.post(busy).json()["id"]
    slow.until(following, lambda job: job["progress"] is not None, "the next job started on the worker")
    freed_s = time.monotonic() - asked
    assert slow.finished(running)["status"] == "canceled"
    assert slow.worker_jobs("cancelled") - cancelled_before == 1
    print(f"cancel -> next job running on the freed worker: {freed_s:.2f} s (the stand-in job lasts "
          f"{SLOW_SECONDS:g} s)")
    assert freed_s < SLOW_SECONDS - 1.5, "the canceled job kept the worker busy"  # it had run 2 steps of 100
    httpx.post(f"{slow.service.url}/v1/jobs/{following}/cancel", headers=PART, timeout=WAIT)
    assert slow.finished(following)["status"] == "canceled"
