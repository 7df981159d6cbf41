"""Synchronous generations are jobs too (issue 20): ``POST /generate`` and ``/generate/stream`` on ``python -m jobs``
answer exactly what the worker answers, plus ``X-Job-Id``, and every one is a job in the store.

Real processes: the jobs service (SQLite in a temp dir) in front of real stand-in workers
(``tests/jobs_service.py``). Run under the cluster lock:
``flock /tmp/ph-cluster.lock python -m pytest -q tests/test_sync_jobs.py``. Durations come from the stand-in's fixed
latency; a job to kill or leave mid-way lasts ``SLOW_SECONDS`` over 100 steps.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import socket
import sqlite3
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from PIL import Image

from bench.harness.processes import Processes, free_port
from bench.harness.waiting import wait_until
from jobs.running import stored_images
from tests.jobs_service import JOB, PART, WAIT, Site, events, ready, service, start_site
from webui.schema import EffectiveParams, GenerationResult, Timings

SLOW_SECONDS = 4.0
"""The slow site's stand-in job (100 steps): a kill or a client leaving after its second step comes mid-job."""
QUEUE_WAIT = 30.0
"""The sites' ``--queue-wait``: ample for a killed worker to restart and warm up."""
SHORT_WAIT = 1.5
"""The worker-less service's ``--queue-wait``: how long its jobs wait for a worker that never comes."""
REFUSED = "no worker took the job (attempt 1: connection to the worker failed"
"""The service's log line when a job's first attempt meets a worker that is down."""


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Site]]:
    """``main`` (stand-in 0.5 s a job), ``slow`` (``SLOW_SECONDS``) and ``lonely``: a service whose worker never
    answers (its job waits ``SHORT_WAIT`` s)."""
    store = tmp_path_factory.mktemp("sync-jobs")
    wait = ("--queue-wait", str(QUEUE_WAIT))
    with Processes("sync-jobs") as processes:
        started = {name: start_site(processes, name, f"sqlite:///{store / name}.sqlite3", seconds, *wait)
                   for name, seconds in (("main", 0.5), ("slow", SLOW_SECONDS))}
        nowhere = f"http://127.0.0.1:{free_port()}"
        lonely = service(processes, "lonely-jobs", nowhere, f"sqlite:///{store / 'lonely.sqlite3'}",
                         "--queue-wait", str(SHORT_WAIT)).start()
        ready(started["main"]), ready(started["slow"])
        lonely.ready("/healthz")
        yield {**started, "lonely": Site(lonely, started["main"].worker, "")}


def direct(site: Site, path: str, body: dict[str, Any], **headers: str) -> httpx.Response:
    """The worker's own answer, past the jobs service."""
    return httpx.post(site.worker.url + path, json=body, headers={**PART, **headers}, timeout=WAIT)


def through(site: Site, path: str, body: dict[str, Any] | None = None, **headers: str) -> httpx.Response:
    return httpx.post(site.service.url + path, json=body, headers={**PART, **headers}, timeout=WAIT + QUEUE_WAIT)


def digest(image: str) -> str:
    return hashlib.sha256(base64.b64decode(image)).hexdigest()


def ndjson(response: httpx.Response) -> list[dict[str, Any]]:
    return [json.loads(line) for line in response.text.splitlines() if line.strip()]


def same_contract(ours: dict[str, Any], theirs: dict[str, Any]) -> None:
    """One result as the jobs service answered it and as the worker did: the same fields and images."""
    assert list(ours) == list(theirs)
    assert ours["images"] == theirs["images"] and ours.get("image") == theirs.get("image")
    assert (ours["seed"], ours["params"], ours["model"]) == (theirs["seed"], theirs["params"], theirs["model"])


def thumbnails_of(site: Site, job_id: str) -> int:
    with sqlite3.connect(store_file(site)) as store:
        return store.execute("SELECT count(*) FROM thumbnails WHERE job_id = ?", (job_id,)).fetchone()[0]


def test_generate_answers_the_workers_result_and_records_the_job(sites: dict[str, Site]) -> None:
    site = sites["main"]
    body = {**JOB, "seed": 2024}
    answer = through(site, "/generate", body, **{"X-Request-ID": "order-77"})
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-request-id"] == "order-77" and answer.headers["content-type"] == "application/json"
    same_contract(answer.json(), direct(site, "/generate", body).json())
    job = site.finished(answer.headers["x-job-id"])
    assert job["status"] == "succeeded" and job["attempts"] == 1 and job["input"]["seed"] == 2024, job
    image = answer.json()["images"][0]
    assert job["results"][0]["sha256"] == digest(image)
    assert hashlib.sha256(site.get(job["output"][0]).content).hexdigest() == digest(image)
    assert thumbnails_of(site, job["id"]) == 0  # not made before the answer
    thumbnail = site.get(f"/v1/jobs/{job['id']}/thumbnails/0")  # made at its first read, and kept
    assert thumbnail.status_code == 200 and thumbnail.headers["content-type"] == "image/webp", thumbnail.text
    assert thumbnails_of(site, job["id"]) == 1

    minimal = through(site, "/generate", body, Prefer="return=minimal")
    assert minimal.headers["preference-applied"] == "return=minimal" and "image" not in minimal.json()
    same_contract(minimal.json(), direct(site, "/generate", body, Prefer="return=minimal").json())
    query = httpx.get(f"{site.service.url}/generate", params={"prompt": "a portrait", "width": 64, "height": 64,
                                                              "steps": 2, "seed": 5}, headers=PART, timeout=WAIT)
    assert query.status_code == 200 and query.json()["seed"] == 5 and "x-job-id" in query.headers

    png = io.BytesIO()
    Image.new("RGB", (96, 64), (30, 140, 200)).save(png, format="PNG")
    retouch = through(site, "/generate", {**body, "init_image": base64.b64encode(png.getvalue()).decode(),
                                          "strength": 0.5})
    assert retouch.status_code == 200, retouch.text
    job = site.finished(retouch.headers["x-job-id"])  # it keeps its photo, for "Make this image again"
    assert site.get(f"/v1/jobs/{job['id']}/input").content == png.getvalue(), job["input"]


def test_a_bad_request_gets_the_workers_own_error(sites: dict[str, Site]) -> None:
    site = sites["main"]
    for bad in ({"prompt": " ", "steps": 0, "colour": "red"}, {**JOB, "width": 70}):
        ours, theirs = through(site, "/generate", bad), direct(site, "/generate", bad)
        assert (ours.status_code, ours.json()) == (theirs.status_code, theirs.json()) == (422, theirs.json())
        assert ours.json()["fields"] and "x-job-id" not in ours.headers
    raw = httpx.post(f"{site.service.url}/generate/stream", content=b"[1]", headers=PART, timeout=WAIT)
    assert raw.status_code == 422 and raw.json()["error"] == "invalid_json"


def test_a_cluster_parts_own_job_sent_to_the_workers_backup_is_refused_at_once(sites: dict[str, Site]) -> None:
    """A generation that names its job (the dispatcher's, a held job's) reaches this service only as the workers
    backend's backup, while no worker is up: it is refused (nothing ran; it waits in its own queue), never run
    through this service again."""
    site = sites["main"]
    before = len(site.get("/v1/jobs?limit=100").json()["jobs"])
    for path in ("/generate", "/generate/stream"):
        answer = through(site, path, JOB, **{"X-Job-Id": "j_dispatched"})
        assert answer.status_code == 503 and answer.json()["error"] == "not_ready", answer.text
    assert len(site.get("/v1/jobs?limit=100").json()["jobs"]) == before  # no job made


def test_the_stream_sends_the_workers_events_and_names_the_job(sites: dict[str, Site]) -> None:
    site = sites["main"]
    body = {**JOB, "seed": 31}
    answer = through(site, "/generate/stream", body)
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/x-ndjson"
    ours, theirs = ndjson(answer), ndjson(direct(site, "/generate/stream", body))
    assert [(e["event"], e.get("step"), e.get("total")) for e in ours] == \
        [(e["event"], e.get("step"), e.get("total")) for e in theirs]
    same_contract(ours[-1]["result"], theirs[-1]["result"])
    job = site.finished(answer.headers["x-job-id"])
    assert job["status"] == "succeeded" and job["results"][0]["sha256"] == digest(ours[-1]["result"]["images"][0])


def test_a_worker_killed_mid_job_is_replayed_and_the_client_gets_its_seeds_image(sites: dict[str, Site]) -> None:
    slow = sites["slow"]
    body = {**JOB, "steps": 100, "seed": 606}
    with ThreadPoolExecutor(1) as pool:
        answer = pool.submit(through, slow, "/generate", body)
        job_id = running_job(slow, answer)
        slow.worker.kill()
        slow.worker.start()
        result = answer.result()
    assert result.status_code == 200, result.text
    assert result.headers["x-job-id"] == job_id
    slow.worker.ready("/readyz")
    assert result.json()["images"] == direct(slow, "/generate", body).json()["images"]
    job = slow.finished(job_id)
    assert job["status"] == "succeeded" and job["attempts"] == 1, job
    statuses = [e["data"]["status"] for e in events(slow, job_id) if e["event"] != "progress"]
    assert statuses == ["starting", "processing", "succeeded"], statuses


def test_a_job_waits_while_the_worker_is_down_and_runs_when_it_is_back(sites: dict[str, Site]) -> None:
    site = sites["main"]
    site.worker.kill()
    refused = site.service.log().count(REFUSED)
    with ThreadPoolExecutor(1) as pool:
        answer = pool.submit(through, site, "/generate", {**JOB, "seed": 8})
        wait_until(lambda: site.service.log().count(REFUSED) > refused, "an attempt that meets the worker down",
                   WAIT, interval=0.05)
        site.worker.start()
        result = answer.result()
    assert result.status_code == 200 and result.json()["seed"] == 8, result.text
    assert site.finished(result.headers["x-job-id"])["status"] == "succeeded"


def test_no_worker_within_the_wait_is_the_clusters_503_and_a_failed_job(sites: dict[str, Site]) -> None:
    lonely = sites["lonely"]
    answer = through(lonely, "/generate", JOB)
    words = f"No worker could take this job within {SHORT_WAIT:g} s: all are busy or down. Retry later."
    assert answer.status_code == 503 and answer.headers["retry-after"] == "10", answer.text
    assert answer.json() == {"error": "busy", "detail": words, "fields": []}
    job = lonely.finished(answer.headers["x-job-id"])
    assert job["status"] == "failed" and job["error"] == words
    stream = through(lonely, "/generate/stream", JOB)
    assert stream.status_code == 503 and stream.json()["detail"] == words


def test_a_client_that_leaves_cancels_its_job_and_frees_the_worker(sites: dict[str, Site]) -> None:
    slow = sites["slow"]
    slow.worker.ready("/readyz")
    cancelled = slow.worker_jobs("cancelled")
    request = json.dumps({**JOB, "steps": 100}).encode()
    with socket.create_connection(("127.0.0.1", slow.service.port), timeout=WAIT) as client:
        secret = "".join(f"{name}: {value}\r\n" for name, value in PART.items()).encode()
        client.sendall(b"POST /generate HTTP/1.1\r\nHost: jobs\r\nContent-Type: application/json\r\n%s"
                       b"Content-Length: %d\r\n\r\n%s" % (secret, len(request), request))
        job_id = wait_until(lambda: newest_running(slow), "the job ran two steps", WAIT)
    left = time.monotonic()
    assert slow.finished(job_id)["status"] == "canceled"
    wait_until(lambda: slow.worker_jobs("cancelled") > cancelled, "the worker dropped the job", WAIT)
    freed = through(slow, "/generate", {**JOB, "steps": 2})
    assert freed.status_code == 200
    assert time.monotonic() - left < SLOW_SECONDS * 1.75, "the abandoned job kept the worker busy"  # ran 2/100
    with httpx.stream("POST", f"{slow.service.url}/generate/stream", json={**JOB, "steps": 100}, headers=PART,
                      timeout=WAIT) as stream:
        job_id = stream.headers["x-job-id"]
        next(line for line in stream.iter_lines() if '"step":2' in line)
    assert slow.finished(job_id)["status"] == "canceled"


def test_a_cancel_through_the_api_answers_the_waiting_client_409(sites: dict[str, Site]) -> None:
    slow = sites["slow"]
    slow.worker.ready("/readyz")
    with ThreadPoolExecutor(1) as pool:
        answer = pool.submit(through, slow, "/generate", {**JOB, "steps": 100})
        job_id = running_job(slow, answer)
        assert httpx.post(f"{slow.service.url}/v1/jobs/{job_id}/cancel", headers=PART, timeout=WAIT).status_code == 200
        result = answer.result()
    assert result.status_code == 409 and result.json()["error"] == "canceled", result.text
    assert job_id in result.json()["detail"] and result.headers["x-job-id"] == job_id
    assert slow.finished(job_id)["status"] == "canceled"


def newest_running(site: Site) -> str | None:
    """The newest job's id once it ran two steps."""
    return next((job["id"] for job in site.get("/v1/jobs?limit=1").json()["jobs"]
                 if job["status"] == "processing" and (job["progress"] or {}).get("step", 0) >= 2), None)


def running_job(site: Site, answer: Future[httpx.Response]) -> str:
    """The id of the job the pending ``answer`` is for, once its worker ran two steps of it."""
    return wait_until(lambda: answer.done() or newest_running(site), "the job ran two steps", WAIT)


def store_file(site: Site) -> str:
    return site.store_url.removeprefix("sqlite:///")


def test_the_worker_is_asked_while_the_job_is_recorded_and_answered_once_recorded(sites: dict[str, Site]) -> None:
    """The store's transaction and the worker run side by side: with the store's write lock held elsewhere, the
    worker still runs the job; the client is answered, naming its job, only once the job is in the store."""
    site = sites["main"]
    site.worker.ready("/readyz")
    ran = site.worker_jobs("ok")
    locker = sqlite3.connect(store_file(site), isolation_level=None, timeout=WAIT)
    with ThreadPoolExecutor(1) as pool:
        locker.execute("BEGIN IMMEDIATE")  # the store's one write lock: the service's record waits (busy timeout)
        try:
            answer = pool.submit(through, site, "/generate", {**JOB, "seed": 4242})
            wait_until(lambda: site.worker_jobs("ok") > ran, "the worker ran the job while its record waited", 6)
            assert not answer.done(), "answered before the job was recorded"
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        result = answer.result()
    assert result.status_code == 200, result.text
    job = site.finished(result.headers["x-job-id"])
    assert job["status"] == "succeeded" and job["results"][0]["sha256"] == digest(result.json()["images"][0])


def test_a_job_the_store_cannot_record_is_stopped_on_its_worker_and_answered_in_words(
        sites: dict[str, Site]) -> None:
    slow = sites["slow"]
    slow.worker.ready("/readyz")
    refusing = sqlite3.connect(store_file(slow), isolation_level=None, timeout=WAIT)
    refusing.execute("CREATE TRIGGER refuse_jobs BEFORE INSERT ON jobs BEGIN SELECT RAISE(ABORT, 'disk full'); END")
    try:
        for path in ("/generate", "/generate/stream"):
            answer = through(slow, path, {**JOB, "steps": 100})
            assert answer.status_code == 500 and answer.json()["error"] == "internal_error", answer.text
            assert "x-job-id" not in answer.headers
    finally:
        refusing.execute("DROP TRIGGER refuse_jobs")
        refusing.close()
    # Asked of the worker beside the record (if it got that far), each was dropped there, not run to its end.
    wait_until(lambda: not httpx.get(f"{slow.worker.url}/readyz", timeout=WAIT).json()["busy"], "the worker is free",
               SLOW_SECONDS / 2)


def test_a_result_image_is_stored_as_the_exact_bytes_the_worker_encoded() -> None:
    """The worker's base64 is decoded strictly: bytes that are not base64 are refused, never dropped in silence
    (which would store an image other than the one the client got)."""
    png = bytes(range(256)) * 40
    result = GenerationResult(images=[base64.b64encode(png).decode()], seed=1, worker_id="w", model="m",
                              params=EffectiveParams(prompt="p", negative_prompt="", steps=2, guidance=1.0, width=64,
                                                     height=64, seed=1, lora_scale=1.0, num_images=1,
                                                     mode="text2img"),
                              timings=Timings(queue_ms=0, generate_ms=1, total_ms=1))
    assert [image.data for image in stored_images(result)] == [png]
    broken = result.model_copy(update={"images": [result.images[0][:40] + "*" + result.images[0][40:]]})
    with pytest.raises(binascii.Error):
        stored_images(broken)
