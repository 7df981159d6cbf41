"""``GET|POST /generate`` and ``GET|POST /generate/stream`` on the jobs service: the worker's REST contract (the
same parsing and checks, bodies, statuses, headers and NDJSON events), every generation a job in the store before
it runs (``jobs.api.sync_jobs``), named in the ``X-Job-Id`` header.

``/generate`` answers the worker's ``GenerationResult`` JSON; ``/generate/stream`` starts its 200 stream when a
worker starts the job (a job that never starts is answered with its error status, as the worker or the cluster
would), then sends the worker's progress events and the result or error event. After a replay (the first
worker died) progress starts again at step 0.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request, Response

from jobs.api.routes import Api, JobsApi
from jobs.api.sync_jobs import (
    SyncJob,
    SyncJobStream,
    SyncOptions,
    accept,
    error_response,
    failure,
    result_body,
    result_line,
    start,
    succeeded,
)
from jobs.running import Ending
from webui import trace
from webui.contract import CLIENT_GONE_STATUS
from webui.schema import ErrorEvent, Limits, ProgressEvent
from webui.worker.job_parsing import ApiError, wait_for_disconnect

logger = logging.getLogger(__name__)

router = APIRouter(tags=["generate"])


async def _sync(request: Request, jobs: JobsApi) -> tuple[SyncOptions, SyncJob]:
    """The checked, recorded job of ``request`` (404 where this service runs no synchronous generations)."""
    if jobs.sync is None:
        raise ApiError(404, "not_found", "This jobs service runs no synchronous generations.")
    limits = (await jobs.limits()) if jobs.limits else Limits()
    sync = await accept(request, jobs.sync, limits)
    trace.job_id.set(sync.id)  # this request's log lines, and its worker's, name the job from here on
    logger.info("job %s accepted (synchronous, request id %s)", sync.id, sync.request_id)
    return jobs.sync, sync


async def _until_first(request: Request, waiting: asyncio.Future[Any]) -> bool:
    """Wait for ``waiting`` while watching the client; False when the client left first."""
    watcher = asyncio.ensure_future(wait_for_disconnect(request.receive))
    try:
        await asyncio.wait({waiting, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    return waiting.done()


@router.api_route("/generate", methods=["GET", "POST"])
async def generate(request: Request, jobs: Api) -> Response:
    """One generation, answered when it is done: the worker's ``GenerationResult`` (``X-Job-Id`` names its job)."""
    options, sync = await _sync(request, jobs)
    run = start(sync, options, result_body)
    if not await _until_first(request, run):
        sync.client_left.set()
        await asyncio.gather(run, return_exceptions=True)
        logger.info("job %s: the client left; canceled", sync.id)
        return Response(status_code=CLIENT_GONE_STATUS)
    ended = run.result()  # the store's error when it could not record the job: a 500 in words, as ever
    if not succeeded(ended):
        return error_response(sync, failure(sync, ended, options.queue_wait))
    assert sync.answer is not None  # megabytes of base64: rendered off the event loop while the result was written
    return Response(await sync.answer, media_type="application/json", headers=sync.headers)


@router.api_route("/generate/stream", methods=["GET", "POST"])
async def generate_stream(request: Request, jobs: Api) -> Response:
    """One generation as NDJSON: progress events (step 0 when a worker starts it), then the result or error."""
    options, sync = await _sync(request, jobs)
    queue: asyncio.Queue[Any] = asyncio.Queue()
    run = start(sync, options, result_line, queue)
    first = asyncio.ensure_future(queue.get())
    if not await _until_first(request, first):
        first.cancel()
        sync.client_left.set()
        await asyncio.gather(run, return_exceptions=True)
        logger.info("job %s: the client left before it started; canceled", sync.id)
        return Response(status_code=CLIENT_GONE_STATUS)
    item = first.result()
    await sync.record()  # nothing is answered for a job that is not in the store
    if isinstance(item, Ending) and not succeeded(item):
        return error_response(sync, failure(sync, item, options.queue_wait))

    async def lines() -> AsyncIterator[str]:
        event = item
        while not isinstance(event, Ending):
            step, total, worker = event
            yield ProgressEvent(step=step, total=total, worker_id=worker).model_dump_json() + "\n"
            event = await queue.get()
        if succeeded(event):
            assert sync.answer is not None
            yield await sync.answer
            return
        error = failure(sync, event, options.queue_wait)
        yield ErrorEvent(status=error.status, error=error.body).model_dump_json() + "\n"

    return SyncJobStream(lines(), sync, run)
