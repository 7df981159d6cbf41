"""REST jobs that workers record themselves (``/v1/worker-jobs``, ``jobs.api.worker_jobs``): the jobs service's side
in process, on SQLite, spoken to as a worker does (``webui.job_records``). The worker's side runs in
``tests/test_cluster.py`` (recorded, replayed after a worker death, canceled) and ``tests/test_worker.py``.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
from collections.abc import Iterator

import pytest
from PIL import Image
from starlette.testclient import TestClient

from jobs.api import JobsApi, create_app
from jobs.store import make_engine, upgrade
from webui.contract import PHOTO_FIELD, WORKER_JOBS_PREFIX
from webui.job_records import MAX_RECORD_BYTES, JobEnd, JobRecording, LeaseReport, RecordedJob, request_seed
from webui.schema import EffectiveParams, GenerationResult, Timings

JOB = {"prompt": "a studio portrait", "width": 64, "height": 64, "steps": 8}
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    url = f"sqlite:///{tmp_path_factory.mktemp('worker-jobs') / 'jobs.sqlite3'}"
    upgrade(url)
    engine = make_engine(url)
    with TestClient(create_app(JobsApi(engine))) as client:
        yield client
    engine.dispose()


def record(api: TestClient, request_id: str, worker: str = "node1") -> RecordedJob:
    recording = JobRecording(request_id=request_id, worker=worker, input={**JOB, "seed": request_seed(request_id)})
    answer = api.post(WORKER_JOBS_PREFIX, content=recording.model_dump_json(), headers=JSON)
    assert answer.status_code == 200, answer.text
    return RecordedJob.model_validate_json(answer.content)


def result_body(worker: str, seed: int) -> tuple[bytes, str]:
    """A worker's ``GenerationResult`` JSON with one PNG, and that PNG's SHA-256."""
    png = io.BytesIO()
    Image.new("RGB", (64, 64), (seed % 256, 90, 40)).save(png, format="PNG")
    params = EffectiveParams(prompt=JOB["prompt"], negative_prompt="", steps=8, guidance=1.0, width=64, height=64,
                             seed=seed, lora_scale=1.0, num_images=1, mode="text2img")
    result = GenerationResult(images=[base64.b64encode(png.getvalue()).decode()], seed=seed, seeds=[seed],
                              worker_id=worker, model="demo", params=params,
                              timings=Timings(queue_ms=1, generate_ms=200, total_ms=206))
    return result.model_dump_json().encode(), hashlib.sha256(png.getvalue()).hexdigest()


def test_a_recorded_job_shows_its_steps_and_then_the_workers_result(api: TestClient) -> None:
    job = record(api, "req-1")
    assert job.attempt == 1 and job.holder.endswith("node1:req-1")
    step = LeaseReport(holder=job.holder, worker="node1", step=3, steps=8).model_dump_json()
    assert api.post(f"{WORKER_JOBS_PREFIX}/{job.id}/lease", content=step, headers=JSON).json() == {"lease": "held"}
    running = api.get(f"/v1/jobs/{job.id}").json()
    assert running["status"] == "processing" and running["progress"]["step"] == 3, running
    body, sha256 = result_body("node1", request_seed("req-1"))
    assert api.post(f"{WORKER_JOBS_PREFIX}/{job.id}/result", content=body, headers=JSON).status_code == 204
    done = api.get(f"/v1/jobs/{job.id}").json()
    assert done["status"] == "succeeded" and done["results"][0]["sha256"] == sha256, done
    assert done["generation"]["worker_id"] == "node1" and done["input"]["seed"] == request_seed("req-1")
    with api.stream("GET", f"/v1/jobs/{job.id}/events") as events:  # ended: the stream ends too
        steps = [json.loads(line.removeprefix("data: ")) for line in events.iter_lines()
                 if line.startswith('data: {"step"')]
    assert steps == [{"step": 3, "steps": 8, "worker_id": "node1"}], steps  # the step, and the worker that made it
    # Written once: a second result (a worker that ran the job twice) is discarded.
    again, _ = result_body("node2", request_seed("req-1") + 1)
    assert api.post(f"{WORKER_JOBS_PREFIX}/{job.id}/result", content=again, headers=JSON).status_code == 204
    assert api.get(f"/v1/jobs/{job.id}").json()["results"][0]["sha256"] == sha256
    gone = LeaseReport(holder=job.holder, worker="node1").model_dump_json()
    assert api.post(f"{WORKER_JOBS_PREFIX}/{job.id}/lease", content=gone, headers=JSON).json() == {"lease": "lost"}


def test_a_retouch_keeps_the_photo_it_was_given(api: TestClient) -> None:
    """A recorded retouch keeps its photo (what "Make this image again" in the History retouches again): served as
    the very bytes, its URL in the job's input."""
    jpeg = io.BytesIO()
    Image.new("RGB", (48, 32), (200, 120, 60)).save(jpeg, format="JPEG")
    fields = {**JOB, "seed": 5, PHOTO_FIELD: base64.b64encode(jpeg.getvalue()).decode(), "strength": 0.5}
    recording = JobRecording(request_id="req-photo", worker="node1", input=fields)
    job = RecordedJob.model_validate_json(api.post(WORKER_JOBS_PREFIX, content=recording.model_dump_json(),
                                                   headers=JSON).content)
    shown = api.get(f"/v1/jobs/{job.id}").json()
    assert shown["input"][PHOTO_FIELD] == f"/v1/jobs/{job.id}/input", shown["input"]
    assert api.get(f"/v1/jobs/{job.id}/input").content == jpeg.getvalue()


def test_a_request_replayed_on_another_worker_is_the_same_job_held_anew(api: TestClient) -> None:
    first = record(api, "req-2", "node1")
    second = record(api, "req-2", "node2")  # the balancer replayed the request: node1 died
    assert second.id == first.id and second.attempt == 2 and second.holder != first.holder
    stale = LeaseReport(holder=first.holder, worker="node1").model_dump_json()
    assert api.post(f"{WORKER_JOBS_PREFIX}/{first.id}/lease", content=stale, headers=JSON).json() == {"lease": "lost"}
    failed = JobEnd(status="failed", error="Out of memory.").model_dump_json()
    assert api.post(f"{WORKER_JOBS_PREFIX}/{first.id}/end", content=failed, headers=JSON).status_code == 204
    ended = api.get(f"/v1/jobs/{first.id}").json()
    assert (ended["status"], ended["error"], ended["attempts"]) == ("failed", "Out of memory.", 2)
    # A replay that comes after the job ended gets the ended job, not a new one.
    assert record(api, "req-2", "node1").id == first.id
    listed = api.get("/v1/jobs?limit=100").json()["jobs"]
    assert [job["id"] for job in listed if job["input"]["seed"] == request_seed("req-2")] == [first.id]


def test_a_cancel_asked_through_the_api_reaches_the_worker_at_its_next_report(api: TestClient) -> None:
    job = record(api, "req-3")
    assert api.post(f"/v1/jobs/{job.id}/cancel").status_code == 200
    report = LeaseReport(holder=job.holder, worker="node1", step=5, steps=8).model_dump_json()
    answer = api.post(f"{WORKER_JOBS_PREFIX}/{job.id}/lease", content=report, headers=JSON)
    assert answer.json() == {"lease": "cancel_requested"}
    assert api.post(f"{WORKER_JOBS_PREFIX}/{job.id}/end",
                    content=JobEnd(status="canceled").model_dump_json(), headers=JSON).status_code == 204
    assert api.get(f"/v1/jobs/{job.id}").json()["status"] == "canceled"


def test_reports_are_checked_and_bounded(api: TestClient) -> None:
    bad_id = api.post(WORKER_JOBS_PREFIX, content=b'{"request_id": "a b", "worker": "w", "input": {}}', headers=JSON)
    assert bad_id.status_code == 422 and bad_id.json()["error"] == "invalid_request", bad_id.text
    assert "request_id" in bad_id.json()["detail"], bad_id.text
    wordy = json.dumps({"request_id": "req-4", "worker": "w", "input": {"prompt": "x" * 70_000}}).encode()
    refused = api.post(WORKER_JOBS_PREFIX, content=wordy, headers=JSON)  # only a photo may make a record larger
    assert refused.status_code == 422 and "besides its photo" in refused.json()["detail"], refused.text
    huge = json.dumps({"request_id": "req-4", "worker": "w", "input": {PHOTO_FIELD: "A" * MAX_RECORD_BYTES}}).encode()
    assert api.post(WORKER_JOBS_PREFIX, content=huge, headers=JSON).status_code == 413
    job = record(api, "req-5")
    assert api.post(f"{WORKER_JOBS_PREFIX}/{job.id}/result", content=b'{"images": 3}', headers=JSON).status_code == 422
    assert api.post(f"{WORKER_JOBS_PREFIX}/{job.id}/end", content=b'{"status": "succeeded"}',
                    headers=JSON).status_code == 422
