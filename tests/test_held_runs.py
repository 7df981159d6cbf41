"""A held run (``jobs/running/held.py``) records every denoising step before the result, also the last step when
the worker sends it in the same read as the result: the holder that was about to record it is stopped then."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from sqlalchemy import Engine
from starlette.testclient import TestClient

from jobs.running.held import HeldRuns
from jobs.store import get, submit_held
from jobs.store.events import events_after
from webui.settings import WorkerSettings
from webui.web.worker_client import WorkerClient
from webui.worker.app import create_app

JOB = {"prompt": "a portrait", "steps": 4, "width": 64, "height": 64, "seed": 5}
WAIT = 60.0


def worker_stream() -> bytes:
    """A real stand-in worker's whole ``/generate/stream`` answer for ``JOB``: progress lines, then the result."""
    with TestClient(create_app(WorkerSettings(model="standin:0", worker_id="held"))) as worker:
        deadline = time.monotonic() + WAIT
        while not worker.get("/readyz").json()["ready"]:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        answer = worker.post("/generate/stream", json=JOB)
        assert answer.status_code == 200, answer.text
        return answer.content


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_the_last_step_sent_with_the_result_is_recorded_before_it(job_store: Engine) -> None:
    body = worker_stream()
    assert body.count(b'"event":"progress"') == JOB["steps"] + 1  # step 0 (started), then each step
    # One read holds every line: the last step and the result reach the holder in the same moment.
    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=body))
    job = submit_held(job_store, JOB, holder="test")

    async def run() -> str:
        client = WorkerClient("http://worker", transport=transport)
        try:
            ending = await HeldRuns(job_store, client).run(job, time.monotonic() + WAIT, fields=JOB)
        finally:
            await client.aclose()
        return ending.status

    assert asyncio.run(run()) == "succeeded"
    events = events_after(job_store, job.id)
    steps = [event.data["step"] for event in events if event.kind == "progress"]
    assert steps and steps[-1] == JOB["steps"], [(event.kind, event.data) for event in events]
    assert events[-1].data["status"] == "succeeded" and get(job_store, job.id).status == "succeeded"
    assert steps == sorted(set(steps))  # each step once
