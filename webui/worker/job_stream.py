"""The NDJSON answer of ``/generate/stream``: a job's events as lines (``event_lines``, ``JobStream``).

One ``ProgressEvent`` per line while the job runs, then its ``ResultEvent`` or an ``ErrorEvent``
(the status and ``ErrorBody`` a plain ``/generate`` would have answered). However the response
ends, a job still waiting or running is abandoned, so a client that leaves frees the GPU.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from fastapi import Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.types import Receive, Scope, Send

from webui.schema import ErrorEvent, ProgressEvent, ResultEvent
from webui.worker.encoder import ResultEncoder
from webui.worker.errors import JobCancelled, JobError
from webui.worker.http_errors import http_error
from webui.worker.job_parsing import ApiError, preference_applied
from webui.worker.job_record import Recording, canceled_error
from webui.worker.scheduler import Job

logger = logging.getLogger("webui.worker")  # the worker's log name, as for its routes


async def event_lines(
    events: asyncio.Queue[ProgressEvent | None], job: Job, encoder: ResultEncoder, request: Request, minimal: bool,
    recording: Recording | None = None,
) -> AsyncIterator[str]:
    """The job's progress ``events`` (until ``None``), then its result or error, one JSON line each; the outcome
    goes to ``recording`` (the job's record at the jobs service) once its line is sent."""
    while (event := await events.get()) is not None:
        yield event.model_dump_json() + "\n"
    try:
        result = await encoder(job.task.result())
    except JobCancelled:
        if recording is not None:
            recording.left()
        if recording is not None and recording.canceled:
            error = canceled_error(await recording.headers())
            yield ErrorEvent(status=error.status, error=error.body).model_dump_json() + "\n"
        return  # else JobStream noted the outcome when the client left
    except Exception as exc:
        error = http_error(exc) if isinstance(exc, JobError) else unexpected(exc)
        request.state.outcome = error.body.error
        yield ErrorEvent(status=error.status, error=error.body).model_dump_json() + "\n"
        if recording is not None:
            recording.failed(error.status, error.body.detail)
        return
    request.state.outcome = "ok"
    exclude = {"result": {"image"}} if minimal else None
    yield await run_in_threadpool(lambda: ResultEvent(result=result).model_dump_json(exclude=exclude) + "\n")
    if recording is not None:  # the answer is sent: its job's result goes on to the store
        recording.succeeded(lambda: result.model_dump_json(exclude={"image"}).encode())


def unexpected(exc: Exception) -> ApiError:
    """An error no domain error names: logged with its traceback, answered in words."""
    logger.error("unexpected error in a streamed job", exc_info=exc)
    return ApiError(500, "internal_error", "Unexpected error; it is in the worker log.")


class JobStream(StreamingResponse):
    """An NDJSON job stream that abandons its job however the response ends (e.g. client gone)."""

    def __init__(self, content: AsyncIterator[str], job: Job, minimal: bool,
                 recording: Recording | None = None) -> None:
        headers = {"Cache-Control": "no-store", **preference_applied(minimal)}
        super().__init__(content, media_type="application/x-ndjson", headers=headers)
        self.job, self.recording = job, recording

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.recording is not None:  # the job's id, once recorded (before the first line)
            self.headers.update(await self.recording.headers())
        try:
            await super().__call__(scope, receive, send)
        finally:
            if self.job.task is not None and not self.job.task.done():
                outcome = self.job.abandon()
                scope.setdefault("state", {})["outcome"] = outcome
                logger.info("job %s: the client left the stream", outcome)
                if self.recording is not None:
                    self.recording.left()
