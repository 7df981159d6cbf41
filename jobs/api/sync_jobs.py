"""A synchronous generation as a job: the request read and checked as the worker does it, recorded in the store
(submitted and held by this process in one transaction, while the worker is already being asked), run by
``jobs.running.HeldRuns`` while the client waits, and answered in the worker's words once recorded.
``jobs.api.generate`` has the routes.

A synchronous job waits for a worker at most ``queue_wait`` seconds (the cluster's ``limits.queue_timeout``) each
time it needs one: at first, and again after its worker died mid-job (it is replayed with the same seed). Then
it fails with the cluster's own 503. A client that leaves cancels it.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from anyio.to_thread import run_sync
from fastapi import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.types import Receive, Scope, Send

from jobs.api.views import job_path
from jobs.contract import CANCELED, CLIENT_HELD, FAILED, PROCESSING, RETENTION, SUCCEEDED
from jobs.running import LOST, DeadlinePassed, Ending, HeldRuns
from jobs.store import Job, new_job_id, submit_held
from jobs.store.request_jobs import hold_for_request
from webui.job_records import marked, request_seed
from webui.schema import MAX_SEED, GenerationResult, Limits, ResultEvent
from webui.trace import JOB_ID_HEADER
from webui.web.worker_errors import JobRejected
from webui.worker.job_parsing import (
    ApiError,
    max_job_body,
    parse_payload,
    preference_applied,
    prefers_minimal,
    read_body,
    scope_request_id,
    validate_job,
)

BUSY_RETRY_AFTER = "10"
"""``Retry-After`` of the 503 when no worker took the job in time (the cluster's own)."""


def busy_words(seconds: float) -> str:
    """What a client reads when no worker took its job in time: the cluster's words (HAProxy's queue timeout)."""
    return f"No worker could take this job within {seconds:g} s: all are busy or down. Retry later."


@dataclass(frozen=True)
class SyncOptions:
    """How this process runs synchronous generations."""

    runs: HeldRuns
    holder: str
    """This process's name in the store's claims."""
    queue_wait: float = 60.0
    retention: timedelta = RETENTION
    running: set[asyncio.Task[Ending]] = field(default_factory=set)
    """Runs in progress (kept referenced; one whose client left finishes its cancel in the background)."""


class StartDeadline:
    """The end of a job's wait for a worker: ``wait`` seconds after it was accepted or last made progress."""

    def __init__(self, wait: float) -> None:
        self.wait = wait
        self.since = time.monotonic()

    def __call__(self) -> float:
        return self.since + self.wait

    def progressed(self) -> None:
        self.since = time.monotonic()


@dataclass
class SyncJob:
    """One synchronous generation: its job (being recorded until ``recorded`` is done) and how its client asked."""

    id: str
    recorded: asyncio.Future[Job]
    fields: dict[str, Any]
    minimal: bool
    request_id: str
    client_left: asyncio.Event = field(default_factory=asyncio.Event)
    answer: asyncio.Future[str] | None = None
    """The result's answer (body or stream line), rendered off the event loop while the result is written."""

    @property
    def job(self) -> Job:
        """The recorded job (only once ``recorded`` is done: no answer names a job that is not in the store)."""
        return self.recorded.result()

    @property
    def headers(self) -> dict[str, str]:
        """Headers of every answer once the job is recorded."""
        return {JOB_ID_HEADER: self.job.id, **preference_applied(self.minimal)}

    async def record(self) -> None:
        """Wait until the job is recorded (by now, unless the store was slower than the worker's first step); the
        store's error, if it failed, propagates (the run stops the generation itself)."""
        await asyncio.shield(self.recorded)


async def accept(request: Request, options: SyncOptions, limits: Limits) -> SyncJob:
    """Read and check the job as the worker does (``ApiError`` 413/415/422 in words), then start recording it,
    held (``SyncJob.recorded``): the caller asks the worker meanwhile. A job the balancer marked for its worker to
    record (this service is then the workers' backup: none was up) is the job of the balancer's request id,
    taken over when a worker recorded it before it died (``hold_for_request``), before anything runs."""
    if request.headers.get(JOB_ID_HEADER):  # a cluster part's own job, sent to the workers' backup: it waits itself
        raise ApiError(503, "not_ready", "No worker is up.", headers={"Retry-After": "1"})
    body = await read_body(request, max_job_body(limits.max_upload_bytes))
    checked = validate_job(parse_payload(body, request.headers.get("content-type", ""), request.query_params), limits)
    fields = checked.model_dump(exclude_none=True)
    request_id = scope_request_id(request.scope)
    if marked(request.headers):
        fields.setdefault("seed", request_seed(request_id))  # as its workers draw it
        job = await _hold_request(options, fields, request_id)
        return SyncJob(job.id, _done(job), fields, prefers_minimal(request), request_id)
    fields.setdefault("seed", secrets.randbelow(MAX_SEED + 1))  # every attempt draws the same image
    job_id = new_job_id()
    recording = asyncio.ensure_future(run_sync(lambda: submit_held(
        options.runs.engine, fields, options.holder, options.runs.lease_s, retention=options.retention,
        job_id=job_id)))
    return SyncJob(job_id, recording, fields, prefers_minimal(request), request_id)


async def _hold_request(options: SyncOptions, fields: dict[str, Any], request_id: str) -> Job:
    """The job of the balancer's request, now held by this service; a 503 in words when it ended meanwhile."""
    job = await run_sync(lambda: hold_for_request(options.runs.engine, fields, options.holder,
                                                  request_id, options.runs.lease_s, retention=options.retention))
    if job.status != PROCESSING or job.claim_owner != CLIENT_HELD + options.holder:
        raise ApiError(503, "busy", job.error or busy_words(options.queue_wait),
                       headers={"Retry-After": BUSY_RETRY_AFTER, JOB_ID_HEADER: job.id})
    return job


def _done(job: Job) -> asyncio.Future[Job]:
    done: asyncio.Future[Job] = asyncio.get_running_loop().create_future()
    done.set_result(job)
    return done


Render = Callable[[SyncJob, GenerationResult], str]
"""How a succeeded job is answered: ``result_body`` (``/generate``) or ``result_line`` (the stream)."""


def start(sync: SyncJob, options: SyncOptions, render: Render,
          queue: asyncio.Queue[Any] | None = None) -> asyncio.Task[Ending]:
    """Run the job; each progress event (``(step, total, worker)``) and then its ``Ending`` go to ``queue``. The
    answer to its result is rendered (``sync.answer``) while the result is written; it is sent once written."""
    deadline = StartDeadline(options.queue_wait)

    def prepare(result: GenerationResult) -> None:
        sync.answer = asyncio.ensure_future(run_sync(render, sync, result))

    def on_progress(step: int, total: int, worker: str) -> None:
        deadline.progressed()
        if queue is not None:
            queue.put_nowait((step, total, worker))

    run = asyncio.ensure_future(options.runs.run(
        sync.recorded, deadline, fields=sync.fields, on_progress=on_progress, client_left=sync.client_left,
        headers={"X-Request-ID": sync.request_id}, deadline_words=lambda _: busy_words(options.queue_wait),
        on_result=prepare))
    options.running.add(run)
    run.add_done_callback(options.running.discard)
    if queue is not None:
        run.add_done_callback(lambda _: queue.put_nowait(ending(run)))
    return run


def ending(run: asyncio.Task[Ending]) -> Ending:
    """The run's ``Ending``, also when it raised (the store failed to record the outcome)."""
    if run.cancelled():
        return Ending(CANCELED)
    error = run.exception()
    return Ending(FAILED, error=error) if error is not None else run.result()


def result_for(sync: SyncJob, result: GenerationResult) -> GenerationResult:
    """The result as the worker answers it: the first image again in ``image`` unless ``return=minimal``."""
    return result if sync.minimal else result.model_copy(update={"image": result.images[0]})


def failure(sync: SyncJob, ended: Ending, queue_wait: float) -> ApiError:
    """A job that did not succeed, as the worker (or the cluster) would have answered it."""
    error, job_id = ended.error, sync.id
    if isinstance(error, DeadlinePassed):
        return ApiError(503, "busy", busy_words(queue_wait), headers={"Retry-After": BUSY_RETRY_AFTER})
    if isinstance(error, JobRejected) and error.body is not None:
        return ApiError(error.status, error.body.error, error.body.detail, error.body.fields)
    if isinstance(error, JobRejected):
        return ApiError(error.status, "generation_failed", str(error))
    if ended.status == CANCELED:
        return ApiError(409, "canceled", f"Job {job_id} was canceled ({job_path(job_id, 'cancel')}) before it "
                        "finished.")
    if ended.status == LOST:
        return ApiError(503, "unavailable", f"Job {job_id} was given up: the job store did not answer for a whole "
                        "lease. Retry.", headers={"Retry-After": "5"})
    return ApiError(500, "internal_error", f"Job {job_id} failed unexpectedly; the jobs service's log has why.")


def error_response(sync: SyncJob, error: ApiError) -> JSONResponse:
    return JSONResponse(error.body.model_dump(), status_code=error.status, headers={**error.headers, **sync.headers})


class SyncJobStream(StreamingResponse):
    """An NDJSON job stream whose job is canceled however the response ends before the job does (client gone)."""

    def __init__(self, lines: Any, sync: SyncJob, run: asyncio.Task[Ending]) -> None:
        super().__init__(lines, media_type="application/x-ndjson", headers={"Cache-Control": "no-store",
                                                                             **sync.headers})
        self.sync, self.run = sync, run

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            if not self.run.done():
                self.sync.client_left.set()


def result_body(sync: SyncJob, result: GenerationResult) -> str:
    """``/generate``'s body for a succeeded job (the worker's ``GenerationResult``)."""
    return result_for(sync, result).model_dump_json(exclude={"image"} if sync.minimal else None)


def result_line(sync: SyncJob, result: GenerationResult) -> str:
    """The stream's last line for a succeeded job (the worker's ``ResultEvent``)."""
    exclude = {"result": {"image"}} if sync.minimal else None
    return ResultEvent(result=result_for(sync, result)).model_dump_json(exclude=exclude) + "\n"


def succeeded(ended: Ending) -> bool:
    return ended.status == SUCCEEDED and ended.result is not None

