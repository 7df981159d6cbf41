"""The worker's job routes (``add_job_routes``): ``/generate`` and ``/generate/stream``, each job read and checked at
the boundary (``admit``), run on the scheduler, its result encoded off the generation thread, and, when the
balancer marked it, recorded as a job at the jobs service (``webui.worker.job_record``).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from webui.contract import CLIENT_GONE_STATUS
from webui.images import UploadError, decode_upload, upload_sha256
from webui.job_records import marked, request_seed
from webui.schema import MAX_SEED, ProgressEvent
from webui.settings import WorkerSettings
from webui.worker.encoder import ResultEncoder
from webui.worker.errors import JobCancelled, JobError
from webui.worker.generation import GenerationService
from webui.worker.http_errors import http_error
from webui.worker.job_cost import check_cost
from webui.worker.job_parsing import (
    allowed_values,
    invalid_request,
    max_job_body,
    params_summary,
    parse_payload,
    preference_applied,
    prefers_minimal,
    read_body,
    scope_request_id,
    validate_job,
    wait_for_disconnect,
)
from webui.worker.job_record import JobRecorder, RecordedAnswer, Recording, canceled_error
from webui.worker.job_stages import Admitted
from webui.worker.job_stream import JobStream, event_lines
from webui.worker.scheduler import Job, JobScheduler

logger = logging.getLogger("webui.worker")  # the worker's log name, as for its other routes


def add_job_routes(app: FastAPI, settings: WorkerSettings, service: GenerationService, scheduler: JobScheduler,
                   encoder: ResultEncoder, recorder: JobRecorder | None) -> None:
    """Add ``/generate`` and ``/generate/stream`` to ``app``; ``recorder``: where marked jobs are recorded."""
    node = settings.resolved_node()
    max_body = max_job_body(settings.max_upload_bytes)

    async def admit(request: Request) -> Admitted:
        """Read, validate and decode a job (or raise the ``ApiError`` that says why not)."""
        service.require_ready()
        limits = service.limits()
        body = await read_body(request, max_body)
        job = validate_job(parse_payload(body, request.headers.get("content-type", ""), request.query_params), limits)
        request.state.params = params_summary(job)
        init_image = None
        if job.init_image is not None:
            try:
                init_image = await run_in_threadpool(
                    decode_upload, job.init_image, settings.max_upload_bytes, settings.max_upload_pixels
                )
            except UploadError as exc:
                raise invalid_request([{"field": "init_image", "message": str(exc),
                                        "allowed": allowed_values(limits)["init_image"]}]) from None
        seed = job.seed if job.seed is not None else (
            request_seed(scope_request_id(request.scope)) if recorder and marked(request.headers)
            else secrets.randbelow(MAX_SEED + 1))
        check_cost(service.pipeline.effective_params(job, seed, init_image), limits)  # ready: it is loaded
        photo_hash = None if job.init_image is None else await run_in_threadpool(upload_sha256, job.init_image)
        return Admitted(job, init_image, seed, photo_hash)

    def record(request: Request, admitted: Admitted, job: Job[Any]) -> Recording | None:
        """The job's record at the jobs service, when the balancer marked the request for one."""
        if recorder is None or not marked(request.headers):
            return None
        return recorder.start(scope_request_id(request.scope), admitted.request, admitted.seed, job.abandon)

    @app.api_route("/generate", methods=["GET", "POST"])
    async def generate(request: Request) -> Response:
        received = time.perf_counter()
        admitted = await admit(request)
        recording: Recording | None = None  # set below, before the generation thread reads it (the loop's next turn)
        job = await scheduler.admit(lambda cancel: admitted.run(
            service, received, cancel, recording.progress if recording else None))
        recording = record(request, admitted, job)
        watcher = asyncio.ensure_future(wait_for_disconnect(request.receive))
        try:
            await asyncio.wait({job.task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watcher.cancel()
        if not job.task.done():
            request.state.outcome = job.abandon()
        try:
            generated = await job.task
            result = await encoder(generated)
        except JobCancelled as exc:
            if recording is not None:
                recording.left()
                if recording.canceled:  # at the jobs service: its client still waits
                    raise canceled_error(await recording.headers()) from None
            logger.info("job %s: %s", request.state.outcome, exc)
            return Response(status_code=CLIENT_GONE_STATUS)
        except JobError as exc:
            if recording is not None:
                recording.failed(http_error(exc).status, str(exc))
            raise
        minimal = prefers_minimal(request)
        # Megabytes of base64: rendered off the event loop, which meanwhile admits the next job.
        body = await run_in_threadpool(result.model_dump_json, exclude={"image"} if minimal else None)
        headers = preference_applied(minimal)
        if recording is None:
            return Response(body, media_type="application/json", headers=headers)
        headers.update(await recording.headers())  # recorded by now: the generation took longer
        return RecordedAnswer(body.encode(), recording, headers)

    @app.api_route("/generate/stream", methods=["GET", "POST"])
    async def generate_stream(request: Request) -> Response:
        received = time.perf_counter()
        admitted = await admit(request)
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[ProgressEvent | None] = asyncio.Queue()

        recording: Recording | None = None  # set below, before the generation thread's first step

        def on_progress(step: int, total: int) -> None:
            if recording is not None:
                recording.progress(step, total)
            event = ProgressEvent(step=step, total=total, worker_id=node)
            loop.call_soon_threadsafe(events.put_nowait, event)

        job = await scheduler.admit(lambda cancel: admitted.run(service, received, cancel, on_progress))
        recording = record(request, admitted, job)
        # Runs after every progress event the thread queued: the thread's calls come first.
        job.task.add_done_callback(lambda _: events.put_nowait(None))

        minimal = prefers_minimal(request)
        return JobStream(event_lines(events, job, encoder, request, minimal, recording), job, minimal, recording)
