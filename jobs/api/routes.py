"""The ``/v1/jobs`` routes: submit (``Prefer: wait``, ``Idempotency-Key``), read, results, events, cancel, list.

Store calls are blocking SQLAlchemy: every one runs in a worker thread (``anyio.to_thread``), never on the event
loop. What the routes need comes from ``JobsApi`` (the engine, the webhook target guard, the workers' limits, a
callback that wakes this host's dispatcher).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated

import anyio
from anyio.to_thread import run_sync
from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import JSONResponse
from fastapi.sse import EventSourceResponse, ServerSentEvent
from sqlalchemy import Engine

from jobs.api.auth import KeyCache, Who, owned
from jobs.api.errors import RESPONSES
from jobs.api.listing import job_filter, next_page
from jobs.api.models import JobAccepted, JobList, JobRequest, JobView
from jobs.api.quotas import check_quota
from jobs.api.sessions import Sessions
from jobs.api.share_tokens import ShareSigner
from jobs.api.sse import job_events, last_event_id
from jobs.api.submission import MAX_BODY_BYTES, prefer_wait, read_submission
from jobs.api.sync_jobs import SyncOptions
from jobs.api.views import PREFIX, accepted, view
from jobs.contract import PAGE_LIMIT_MAX, RETENTION
from jobs.errors import ResultNotFound
from jobs.metrics import JobsMetrics
from jobs.store import Job, JobFilter, cancel, get, list_newest_first, result_data, stored_results, submit
from jobs.webhooks.targets import TargetGuard
from webui import trace
from webui.schema import ErrorBody, Limits
from webui.trace import JOB_ID_HEADER

logger = logging.getLogger(__name__)

WAIT_POLL_S = 0.1
"""How often a ``Prefer: wait`` request looks whether its job finished."""


@dataclass
class JobsApi:
    """What the routes use: the store, the webhook guard, the workers' limits, the local dispatcher's wake-up."""

    engine: Engine
    guard: TargetGuard = field(default_factory=TargetGuard)
    limits: Callable[[], Awaitable[Limits]] | None = None
    """The limits the workers check (their ``/info``); the schema's defaults when None or unreachable."""
    wake: Callable[[], None] = lambda: None
    retention: timedelta = RETENTION
    max_body: int = MAX_BODY_BYTES
    redeliver: Callable[[str, str], Awaitable[object]] | None = None
    """One more attempt of a job's webhook delivery now (job id, delivery id); None: this service sends none."""
    sync: SyncOptions | None = None
    """How synchronous ``/generate`` requests run (None: this service serves none)."""
    shares: ShareSigner | None = None
    """Signs and checks share links (None: this service makes none)."""
    keys: KeyCache | None = None
    """Checks API keys (None: a cache of ``KEY_CACHE_SECONDS`` on ``engine``)."""
    site_login: bool = False
    """Whether a request's basic-auth user name names its owner (the site's login, checked by HAProxy)."""
    sessions: Sessions | None = None
    """Signs members in and checks their browser sessions (None: no cluster secret, so no sign-in)."""
    metrics: JobsMetrics | None = None
    """Where quota refusals are counted per account (the service's /metrics; None: not counted)."""


def api(request: Request) -> JobsApi:
    return request.app.state.jobs_api


Api = Annotated[JobsApi, Depends(api)]


async def existing_job(job_id: str, jobs: Api, who: Who) -> Job:
    """The caller's job in the path; 404 unknown or another's, 410 expired (before any SSE stream starts)."""
    return await run_sync(owned, jobs.engine, job_id, who)


async def wait_until_done(engine: Engine, job: Job, seconds: float) -> Job:
    """The job once it is terminal, or as it is after ``seconds``."""
    with anyio.move_on_after(seconds):
        while not job.terminal:
            await anyio.sleep(WAIT_POLL_S)
            job = await run_sync(get, engine, job.id)
    return job


router = APIRouter(prefix=PREFIX, tags=["jobs"], responses=RESPONSES)


@router.post("", status_code=202, response_model=JobAccepted, openapi_extra={"requestBody": {
    "required": True, "content": {"application/json": {"schema": JobRequest.model_json_schema()}}}},
    responses={200: {"model": JobView, "description": "An earlier job with this Idempotency-Key and body"},
               201: {"model": JobView, "description": "Finished within Prefer: wait"},
               429: {"model": ErrorBody, "description": "The account's quota is used up (Retry-After)"}})
async def submit_job(request: Request, jobs: Api, who: Who) -> Response:
    """Accept a job (202). ``Prefer: wait=N`` (N ≤ 60) holds the answer until it is finished (201) or N s passed
    (202). ``Idempotency-Key``: the same key and body answer the same job (200), another body is a 422. An account
    past its quota is a 429 (``jobs.api.quotas``)."""
    limits = (await jobs.limits()) if jobs.limits else Limits()
    checked = await read_submission(request, limits, jobs.guard, jobs.max_body)
    await check_quota(jobs.engine, who.owner, checked.input, checked.idempotency_key, jobs.metrics)
    job, created = await run_sync(lambda: submit(
        jobs.engine, checked.input, idempotency_key=checked.idempotency_key, body_hash=checked.body_hash,
        owner=who.owner, retention=jobs.retention))
    trace.job_id.set(job.id)  # this request's log lines name the job from here on (webui.trace)
    named = {JOB_ID_HEADER: job.id}  # HAProxy's log line of this request names it too
    if created:
        jobs.wake()
        logger.info("job %s accepted", job.id)
    if (wait := prefer_wait(request)) is not None:
        job = await wait_until_done(jobs.engine, job, wait)
    if job.terminal or not created:
        status = 201 if created else 200
        body = (await run_sync(view, jobs.engine, job)).model_dump(mode="json")
        return JSONResponse(body, status_code=status, headers=named)
    return JSONResponse(accepted(job).model_dump(mode="json"), status_code=202, headers=named)


@router.get("", response_model=JobList)
async def list_jobs(request: Request, jobs: Api, who: Who, only: Annotated[JobFilter, Depends(job_filter)],
                    cursor: str | None = None, limit: Annotated[int, Query(ge=1, le=PAGE_LIMIT_MAX)] = 20) -> JobList:
    """Your jobs (your API key's account's, or your login's; everyone's on a site without one), newest first;
    follow ``next`` for the next page. Filters: ``since``/``until`` (ISO 8601 date or time, UTC unless it says),
    ``preset``, ``q`` (text in the prompt, any case), ``key`` (the Idempotency-Key it was submitted with); ``next``
    keeps them."""
    def page() -> JobList:
        found = list_newest_first(jobs.engine, who.owner, cursor, limit, only)
        return JobList(jobs=[view(jobs.engine, job) for job in found.jobs], next_cursor=found.next_cursor,
                       next=next_page(request, found.next_cursor))
    return await run_sync(page)


@router.get("/{job_id}", response_model=JobView)
async def get_job(job: Annotated[Job, Depends(existing_job)], jobs: Api) -> JobView:
    """The job: status, queue position, progress, results, error, timestamps."""
    return await run_sync(view, jobs.engine, job)


@router.head("/{job_id}/results/{index}", include_in_schema=False)
@router.get("/{job_id}/results/{index}", response_class=Response,
            responses={200: {"content": {"image/png": {}}, "description": "The image's bytes"}, 304: {}})
async def get_result(job: Annotated[Job, Depends(existing_job)], index: int, request: Request, jobs: Api) -> Response:
    """One result's bytes; ``ETag`` is their SHA-256, cached until the job expires (they never change)."""
    return await result_response(jobs, job, index, request, job.expires_at)


async def result_response(jobs: JobsApi, job: Job, index: int, request: Request, until: datetime) -> Response:
    """Result ``index`` of ``job`` (304 for a matching ``If-None-Match``), cacheable until ``until``."""
    if job.status != "succeeded":
        raise ResultNotFound(job.id, index, f"the job is {job.status}, and only a succeeded job has results")
    described = await run_sync(stored_results, jobs.engine, job.id)
    if not 0 <= index < len(described):
        raise ResultNotFound(job.id, index, f"its results are numbered 0 to {len(described) - 1}")
    headers = immutable_headers(described[index].sha256, until)
    if not_modified(request, headers):
        return Response(status_code=304, headers=headers)
    stored, data = await run_sync(result_data, jobs.engine, job.id, index)
    return Response(data, media_type=stored.media_type, headers=headers)


def immutable_headers(sha256: str, until: datetime) -> dict[str, str]:
    """Cache headers of bytes that never change: ``ETag`` their SHA-256, cached privately until ``until``."""
    max_age = max(0, int((until - datetime.now(UTC)).total_seconds()))
    return {"ETag": f'"{sha256}"', "Cache-Control": f"private, max-age={max_age}, immutable"}


def not_modified(request: Request, headers: dict[str, str]) -> bool:
    """Whether ``request``'s ``If-None-Match`` names the ``ETag`` in ``headers``."""
    return headers["ETag"] in [tag.strip() for tag in request.headers.get("if-none-match", "").split(",")]


@router.get("/{job_id}/events", response_class=EventSourceResponse)
async def job_event_stream(job: Annotated[Job, Depends(existing_job)], jobs: Api,
                           last_event: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
                           ) -> AsyncIterator[ServerSentEvent]:
    """Server-Sent Events: queued (position), started, progress per step, then result, failed or canceled;
    ``id`` is the event's number, and a reconnect with ``Last-Event-ID`` resumes after it."""
    async for event in job_events(jobs.engine, job.id, last_event_id(last_event)):
        yield event


@router.post("/{job_id}/cancel", response_model=JobView)
async def cancel_job(job: Annotated[Job, Depends(existing_job)], jobs: Api) -> JobView:
    """Cancel: a queued job at once; a running one is stopped by its dispatcher (its GPU is free within
    about 2 s); a finished job stays as it is."""
    canceled = await run_sync(cancel, jobs.engine, job.id)
    logger.info("job %s: cancel asked (now %s)", job.id, canceled.status)
    return await run_sync(view, jobs.engine, canceled)
