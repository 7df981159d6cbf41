"""REST generations that workers record themselves (``WORKER_JOBS_PREFIX``, ``webui.job_records``'s shapes).

The balancer sends a public ``POST /generate`` straight to a worker; the worker records it here while it already
generates (``jobs.store.request_jobs``: a replay after a worker died is the same job), reports its lease and
steps while it runs, answers its client, then sends its result (or its failure, or a cancel). So the job costs the
client's answer no extra hop. Only cluster parts reach these routes: the balancer routes the prefix from its
worker-queue listener alone, and the service checks the cluster secret.
"""

from __future__ import annotations

import logging
from typing import Any

from anyio.to_thread import run_sync
from fastapi import APIRouter, Request, Response
from pydantic import ValidationError

from jobs.api.routes import Api, JobsApi
from jobs.contract import CANCELED, LEASE_SECONDS, MAX_BODY_BYTES, SUCCEEDED
from jobs.running import stored_images
from jobs.store import fail, finish, get, mark_canceled, record_progress, renew
from jobs.store.request_jobs import hold_for_request
from webui.contract import MAX_IMAGES, MAX_SIDE, WORKER_JOBS_PREFIX
from webui.job_records import MAX_RECORD_BYTES, JobEnd, JobRecording, LeaseAnswer, LeaseReport, RecordedJob
from webui.schema import GenerationResult
from webui.worker.job_parsing import invalid_request

logger = logging.getLogger(__name__)

# A worker's reports are small: the jobs API's body limit (413 above it; a bad shape is a 422 in words).
router = APIRouter(prefix=WORKER_JOBS_PREFIX, include_in_schema=False, max_body_size=MAX_BODY_BYTES)

MAX_RESULT_BYTES = MAX_IMAGES * MAX_SIDE * MAX_SIDE * 4 * 4 // 3 + (1 << 20)
"""The largest result a worker sends: its most images, each no larger than raw RGBA, in base64."""


@router.post("", max_body_size=MAX_RECORD_BYTES)  # a retouch's photo with it
async def record(recording: JobRecording, jobs: Api) -> RecordedJob:
    """Record (or, for a replayed request, take over) the job of the balancer's request; held for the worker."""
    holder = f"{recording.worker}:{recording.request_id}"
    job = await run_sync(lambda: hold_for_request(jobs.engine, recording.input, holder, recording.request_id,
                                                  LEASE_SECONDS, retention=jobs.retention))
    logger.info("job %s recorded by worker %s (request %s, attempt %d)", job.id, recording.worker,
                recording.request_id, job.attempts)
    return RecordedJob(id=job.id, holder=job.claim_owner or "", attempt=job.attempts)


@router.post("/{job_id}/lease")
async def lease(job_id: str, report: LeaseReport, jobs: Api) -> LeaseAnswer:
    """Renew the worker's hold, recording its latest step when it sends one; says whether to go on."""
    if report.step is not None and report.steps is not None:
        held = await run_sync(lambda: record_progress(jobs.engine, job_id, report.holder, report.step, report.steps,
                                                      LEASE_SECONDS, worker_id=report.worker))
    else:
        held = await run_sync(renew, jobs.engine, job_id, report.holder, LEASE_SECONDS)
    return LeaseAnswer(lease=held.value)


@router.post("/{job_id}/result", status_code=204, max_body_size=MAX_RESULT_BYTES)
async def result(job_id: str, request: Request, jobs: Api) -> Response:
    """The worker's ``GenerationResult`` as the job's outcome (unless the job already ended)."""
    body = await request.body()
    try:
        generated = await run_sync(GenerationResult.model_validate_json, body)
    except ValidationError:
        raise invalid_request([{"field": "result", "message": "not a GenerationResult"}]) from None
    status, images, seconds = await run_sync(_finish, jobs, job_id, generated)
    _count(jobs, status, images, seconds)
    return Response(status_code=204)


def _finish(jobs: JobsApi, job_id: str, generated: GenerationResult) -> tuple[str, int, float]:
    job = get(jobs.engine, job_id)
    generation: dict[str, Any] = {**generated.model_dump(mode="json", exclude={"images", "image"}),
                                  "attempts": job.attempts}
    settled = finish(jobs.engine, job_id, stored_images(generated), None, generation)
    if not settled.written:
        logger.info("job %s was already %s: this result was discarded", job_id, settled.job.status)
        return settled.job.status, 0, 0.0
    logger.info("job %s succeeded on %s (%d images)", job_id, generated.worker_id, len(generated.images))
    return SUCCEEDED, len(generated.images), generated.timings.generate_ms / 1000


@router.post("/{job_id}/end", status_code=204)
async def end(job_id: str, ended: JobEnd, jobs: Api) -> Response:
    """The job failed (``error``: words for its client) or was canceled on the worker."""
    if ended.status == CANCELED:
        settled = await run_sync(mark_canceled, jobs.engine, job_id)
    else:
        settled = await run_sync(fail, jobs.engine, job_id, ended.error or "The generation failed.")
    logger.info("job %s %s on its worker%s", job_id, ended.status, f": {ended.error}" if ended.error else "")
    _count(jobs, settled.job.status if settled.written else "", 0, 0.0)
    return Response(status_code=204)


def _count(jobs: JobsApi, status: str, images: int, seconds: float) -> None:
    if jobs.metrics is not None and status:
        jobs.metrics.ended(status, None, images, seconds)
