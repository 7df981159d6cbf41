"""The GPU worker: one HTTP server that owns one diffusion pipeline (``python -m webui.worker``).

Routes::

    GET|POST /generate          one job -> GenerationResult JSON (base64 PNGs)
    GET|POST /generate/stream   one job -> NDJSON: ProgressEvent (step 0 when the job starts
                                running, then one per denoising step), then ResultEvent or ErrorEvent
    GET /healthz                200 while the process serves (liveness)
    GET /readyz                 200 when the model is loaded, warmed up and healthy, else 503; a running
                                job's denoising loop with no step for far longer than usual is a
                                stall: 503, ``stalled`` says so (``webui.worker.progress``)
    GET /info                   the model, its defaults and the limits jobs must keep (``WorkerInfo``)
    GET|HEAD /                  200, a one-line JSON description
    GET /metrics                Prometheus text format (see ``webui.worker.metrics``)

A job is a ``GenerationRequest``: a JSON object in the body, or query parameters when the
body is empty (``GET /generate?prompt=a+portrait&steps=8``). A result holds every image in
``images`` and the first one again in ``image``; a job sent with ``Prefer: return=minimal`` gets
its result without ``image`` (and ``Preference-Applied: return=minimal``), as the web fronts ask.

One generation runs at a time, in the worker's own generation thread; up to
``queue_size`` more wait in arrival order (0 behind HAProxy: a job that reaches a busy worker
is refused with a retryable 503). Waiting or running jobs whose client went away are dropped
(a running one at its next denoising step, which frees the GPU). Results are PNG-encoded in an
encoder thread, so the generation thread takes the next job at once; with ``--dispatch-agent-port``,
HAProxy's agent check learns when that next job may come (``webui.worker.dispatch_agent``).

Status codes (every error body is an ``ErrorBody``, never a traceback):

* 422 ``invalid_request``/``invalid_json``/``invalid_image``: names the field and its allowed
  range; ``job_too_large``: above the per-job budget of megapixel-steps (``webui.worker.job_cost``);
  413 body too large; 415 body not JSON.
* 503 ``busy`` (queue full, with ``Retry-After``) or ``not_ready`` (loading, warming up or
  shutting down): nothing ran, so the balancer may safely retry on another worker.
* 507 ``out_of_memory``: the job ran out of GPU (or host) memory. Deliberately *not* 503:
  HAProxy retries 503 on the next worker, which has the same GPU and would run out of memory
  on the same size too, taking every worker through an OOM for one request. 507 is not in
  HAProxy's ``retry-on`` set; the client is told to lower the resolution or image count.
* 500 ``generation_failed``/``internal_error``: unexpected; the traceback is in the log.

After an OOM the worker frees memory (``gc.collect``, ``torch.cuda.empty_cache`` on CUDA)
and runs a small self-check generation. After ``max_consecutive_ooms`` OOMs in a row (then
with no self-check), or if the self-check fails, it turns not-ready, finishes the responses in
flight and exits with ``EXIT_OOM`` so that its supervisor restarts it with a clean device. A model that cannot
be loaded (or warmed up) makes it exit with ``EXIT_LOAD_FAILED``.

Each request is logged as one JSON line (request id from ``X-Request-ID`` or a new one,
echoed back in the response header).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from http import HTTPStatus
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from webui import trace
from webui.cluster_secret import ClusterSecret, RequireClusterSecret
from webui.contract import (
    CLIENT_GONE_STATUS,
    EXIT_LOAD_FAILED,
    HEALTH_PATH,
    INFO_PATH,
    JOB_PATHS,
    METRICS_PATH,
    OUT_OF_MEMORY_STATUS,
    PRIVATE_UMASK,
    READY_PATH,
    STALLED_KEY,
    TRAFFIC_PATH,
)
from webui.images import UploadError, decode_upload, upload_sha256
from webui.log_setup import configure_logging
from webui.schema import (
    MAX_SEED,
    ErrorBody,
    ErrorEvent,
    ProgressEvent,
    ResultEvent,
)
from webui.settings import WorkerSettings, settings_from_cli, settings_problems
from webui.trace import bound, headers_ids
from webui.traffic import count_traffic
from webui.worker.compile_cache import use_compile_cache
from webui.worker.dispatch_agent import DispatchAgent
from webui.worker.encoder import ResultEncoder
from webui.worker.errors import GenerationFailed, JobCancelled, JobError, NotReady, OutOfMemory, QueueFull
from webui.worker.faults import FaultPlan
from webui.worker.generation import Admitted, GenerationService
from webui.worker.job_cost import check_cost
from webui.worker.job_parsing import (
    ApiError,
    allowed_values,
    invalid_request,
    max_job_body,
    params_summary,
    parse_payload,
    preference_applied,
    prefers_minimal,
    read_body,
    validate_job,
    validation_problems,
    wait_for_disconnect,
)
from webui.worker.metrics import WorkerMetrics
from webui.worker.pipelines.base import PipelineLoader
from webui.worker.pipelines.loader import load_pipeline as load_portrait_pipeline
from webui.worker.scheduler import Job, JobScheduler
from webui.worker.standby import WarmStandby, hold_go_signal

logger = logging.getLogger("webui.worker")  # also when run as __main__
access_logger = logging.getLogger("webui.worker.access")

PROBE_ENDPOINTS = frozenset({"/", HEALTH_PATH, READY_PATH, INFO_PATH, METRICS_PATH, TRAFFIC_PATH})
ENDPOINTS = (*PROBE_ENDPOINTS, *JOB_PATHS)
ERROR_STATUSES: dict[type[JobError], int] = {
    NotReady: 503, QueueFull: 503, OutOfMemory: OUT_OF_MEMORY_STATUS, GenerationFailed: 500,
}
"""The HTTP status of each domain error. 503s are in ``RETRYABLE_STATUSES`` (nothing ran); an
out-of-memory is not (HAProxy would take every worker through the same OOM)."""
"""Endpoints balancers and scrapers poll: logged at DEBUG so the log stays readable."""


# --------------------------------------------------------------------------- request log


def status_outcome(status: int) -> str:
    """``ok`` below 400, else the status's name in snake case (``not_found``)."""
    if status < 400:
        return "ok"
    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "_")
    except ValueError:
        return f"http_{status}"


class RequestLog:
    """ASGI middleware: a request id (``X-Request-ID``), one JSON log line and metrics per request.

    Handlers may set ``request.state.outcome`` and ``request.state.params`` for the log.
    """

    def __init__(self, app: ASGIApp, node: str, metrics: WorkerMetrics) -> None:
        self.app = app
        self.node = node
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id, job_id = headers_ids(scope.get("headers") or [])
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode("latin-1"))]
            await send(message)

        with bound(request_id, job_id):  # every log line of this request names it (webui.log_setup)
            started = time.perf_counter()
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                self.log(scope, state, status, time.perf_counter() - started)

    def log(self, scope: Scope, state: dict[str, Any], status: int, seconds: float) -> None:
        """The request's JSON log line and its metrics."""
        path = scope["path"]
        endpoint = path if path in ENDPOINTS else "other"
        outcome = state.get("outcome") or status_outcome(status)
        self.metrics.observe_request(endpoint, outcome, seconds)
        job_id = trace.job_id.get()
        line = {
            "request_id": state["request_id"], **({"job_id": job_id} if job_id else {}), "method": scope["method"],
            "endpoint": endpoint, "status": status, "outcome": outcome, "duration_ms": round(seconds * 1000, 1),
            "node": self.node, **({"params": state["params"]} if "params" in state else {}),
        }
        access_logger.log(logging.DEBUG if endpoint in PROBE_ENDPOINTS else logging.INFO, json.dumps(line))


# --------------------------------------------------------------------------- HTTP


def http_error(error: JobError) -> ApiError:
    """The HTTP answer to a domain error (the one place that maps them)."""
    headers = {"Retry-After": str(error.retry_after)} if error.retry_after is not None else None
    return ApiError(ERROR_STATUSES.get(type(error), 500), error.code, error.detail, headers=headers)


def error_response(request: Request, error: ApiError) -> JSONResponse:
    """The JSON response for ``error`` (and its outcome for the request log)."""
    request.state.outcome = error.body.error
    return JSONResponse(error.body.model_dump(), status_code=error.status, headers=error.headers)


class JobStream(StreamingResponse):
    """An NDJSON job stream that abandons its job however the response ends (e.g. client gone)."""

    def __init__(self, content: AsyncIterator[str], job: Job, minimal: bool) -> None:
        super().__init__(content, media_type="application/x-ndjson",
                         headers={"Cache-Control": "no-store", **preference_applied(minimal)})
        self.job = job

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            if self.job.task is not None and not self.job.task.done():
                outcome = self.job.abandon()
                scope.setdefault("state", {})["outcome"] = outcome
                logger.info("job %s: the client left the stream", outcome)


def create_app(
    settings: WorkerSettings,
    pipeline_loader: PipelineLoader = load_portrait_pipeline,
    on_fatal: Callable[[int], None] | None = None,
    faults: FaultPlan | None = None,
) -> FastAPI:
    """Build the worker's app; the pipeline loads in the background once the app starts.

    ``on_fatal(exit_code)`` is called when the worker must stop (model load failure,
    repeated OOM); ``main`` makes it end the process after the responses in flight.
    ``faults`` defaults to ``FaultPlan.from_env()`` (tests only).
    """
    node = settings.resolved_node()
    metrics = WorkerMetrics()
    scheduler = JobScheduler(settings.queue_size)
    service = GenerationService(
        settings, pipeline_loader, faults if faults is not None else FaultPlan.from_env(), metrics,
        on_fatal or (lambda code: logger.critical("fatal (exit code %d) but no process hook; staying up", code)),
    )
    agent = DispatchAgent(lambda: encoder.pending > 0 and not scheduler.busy and not scheduler.queue_depth
                          and service.ready, serving=lambda: service.ready and service.steps.stall() is None)
    encoder = ResultEncoder(service.encode, agent.settle if settings.dispatch_agent_port else None)
    metrics.track(
        queue_depth=lambda: scheduler.queue_depth, busy=lambda: scheduler.busy, ready=lambda: service.ready,
        cuda_device=lambda: service.cuda_device,
    )
    max_body = max_job_body(settings.max_upload_bytes)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.loading = asyncio.get_running_loop().run_in_executor(scheduler.executor, service.load)
        if settings.dispatch_agent_port:
            await agent.start(settings.dispatch_agent_host or settings.host, settings.dispatch_agent_port)
        yield
        service.stop()
        await agent.close()
        scheduler.close()
        encoder.close()

    app = FastAPI(title="portrait-ha worker", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service = service
    app.state.scheduler = scheduler
    app.state.metrics = metrics
    app.add_middleware(RequestLog, node=node, metrics=metrics)
    count_traffic(app)  # what a node host's sidecar waits on in a rolling restart
    secret = ClusterSecret.from_env()
    if secret is not None:  # outermost: a stranger's request is refused before anything is counted or run
        app.add_middleware(RequireClusterSecret, secret=secret)

    @app.exception_handler(ApiError)
    async def on_api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(request, exc)

    @app.exception_handler(JobError)
    async def on_job_error(request: Request, exc: JobError) -> JSONResponse:
        return error_response(request, http_error(exc))

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(request, invalid_request(validation_problems(list(exc.errors()), service.limits())))

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        error = ApiError(exc.status_code, status_outcome(exc.status_code),
                         f"{exc.detail}: {request.method} {request.url.path}", headers=exc.headers)
        return error_response(request, error)

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Starlette re-raises ``exc`` after this response, so uvicorn logs the traceback.
        logger.error("unexpected %s in %s %s (request id %s)", type(exc).__name__, request.method, request.url.path,
                     request.state.request_id)
        error = ApiError(500, "internal_error",
                         f"Unexpected error; it is in the worker log under request id {request.state.request_id}.")
        return error_response(request, error)

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
        seed = job.seed if job.seed is not None else secrets.randbelow(MAX_SEED + 1)
        check_cost(service.pipeline.effective_params(job, seed, init_image), limits)  # ready: it is loaded
        photo_hash = None if job.init_image is None else await run_in_threadpool(upload_sha256, job.init_image)
        return Admitted(job, init_image, seed, photo_hash)

    @app.api_route("/", methods=["GET", "HEAD"])
    async def root() -> dict[str, Any]:
        return {"service": "portrait-ha worker", "node": node, "ready": service.ready}

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"alive": True, "node": node}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        stall = service.steps.stall()
        stalled_for = service.steps.stalled_for()
        body = {
            "ready": service.ready and stall is None, "reason": stall or service.reason, "busy": scheduler.busy,
            "queue_depth": scheduler.queue_depth, "node": node,
            "consecutive_ooms": service.consecutive_ooms, "pipeline": service.describe(),
            "stalled_for": None if stalled_for is None else round(stalled_for, 3), STALLED_KEY: stall,
        }
        return JSONResponse(jsonable_encoder(body), status_code=200 if body["ready"] else 503)

    @app.get(INFO_PATH)
    async def info() -> JSONResponse:
        """The model, its defaults and the limits this worker accepts (503 before it is loaded)."""
        return JSONResponse(service.info().model_dump(mode="json"))

    @app.get("/metrics")
    async def metrics_endpoint() -> Response:
        content, content_type = metrics.render()
        return Response(content, media_type=content_type)

    @app.api_route("/generate", methods=["GET", "POST"])
    async def generate(request: Request) -> Response:
        received = time.perf_counter()
        admitted = await admit(request)
        job = scheduler.submit(lambda cancel: admitted.run(service, received, cancel))
        watcher = asyncio.ensure_future(wait_for_disconnect(request.receive))
        try:
            await asyncio.wait({job.task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watcher.cancel()
        if not job.task.done():
            request.state.outcome = job.abandon()
        try:
            generated = await job.task
        except JobCancelled as exc:
            logger.info("job %s: %s", request.state.outcome, exc)
            return Response(status_code=CLIENT_GONE_STATUS)
        result = await encoder(generated)
        minimal = prefers_minimal(request)
        # Megabytes of base64: rendered off the event loop, which meanwhile admits the next job.
        body = await run_in_threadpool(result.model_dump_json, exclude={"image"} if minimal else None)
        return Response(body, media_type="application/json", headers=preference_applied(minimal))

    @app.api_route("/generate/stream", methods=["GET", "POST"])
    async def generate_stream(request: Request) -> Response:
        received = time.perf_counter()
        admitted = await admit(request)
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[ProgressEvent | None] = asyncio.Queue()

        def on_progress(step: int, total: int) -> None:
            event = ProgressEvent(step=step, total=total, worker_id=node)
            loop.call_soon_threadsafe(events.put_nowait, event)

        job = scheduler.submit(lambda cancel: admitted.run(service, received, cancel, on_progress))
        # Runs after every progress event the thread queued: the thread's calls come first.
        job.task.add_done_callback(lambda _: events.put_nowait(None))

        async def lines() -> AsyncIterator[str]:
            while (event := await events.get()) is not None:
                yield event.model_dump_json() + "\n"
            try:
                result = await encoder(job.task.result())
            except JobCancelled:
                return  # JobStream noted the outcome when the client left
            except JobError as exc:
                error = http_error(exc)
                request.state.outcome = error.body.error
                yield ErrorEvent(status=error.status, error=error.body).model_dump_json() + "\n"
                return
            except Exception:
                logger.exception("unexpected error in a streamed job")
                request.state.outcome = "internal_error"
                body = ErrorBody(error="internal_error", detail="Unexpected error; it is in the worker log.")
                yield ErrorEvent(status=500, error=body).model_dump_json() + "\n"
                return
            request.state.outcome = "ok"
            exclude = {"result": {"image"}} if minimal else None
            yield await run_in_threadpool(lambda: ResultEvent(result=result).model_dump_json(exclude=exclude) + "\n")

        minimal = prefers_minimal(request)
        return JobStream(lines(), job, minimal)

    return app


# --------------------------------------------------------------------------- process


class ProcessExit:
    """Lets the app end the process with a chosen code, after the responses in flight."""

    def __init__(self) -> None:
        self.code = 0
        self.server: uvicorn.Server | None = None

    def __call__(self, code: int) -> None:
        if not self.code:
            self.code = code
        if self.server is not None:
            self.server.should_exit = True  # uvicorn stops listening, then drains connections


def main(argv: list[str] | None = None) -> int:
    """Run a worker: parse settings (CLI + ``PORTRAIT_*``), serve until SIGTERM or a fatal error."""
    os.umask(PRIVATE_UMASK)  # its logs, uploads and images: this user's only
    settings = settings_from_cli(WorkerSettings, argv, "python -m webui.worker")
    if settings is None:
        return 2
    try:
        faults = FaultPlan.from_env()
    except ValidationError as exc:
        print(f"python -m webui.worker: invalid setting: {settings_problems(exc)}", file=sys.stderr)
        return 2
    configure_logging()
    use_compile_cache(settings.compile_cache_dir)  # before the pipeline (or a standby) compiles anything
    loader: PipelineLoader = load_portrait_pipeline
    if settings.standby is not None:
        hold_go_signal()
        standby = WarmStandby(settings, settings.standby)
        if not standby.prepare():
            return EXIT_LOAD_FAILED
        standby.wait_for_go()
        loader = standby.loader
    process_exit = ProcessExit()
    app = create_app(settings, pipeline_loader=loader, on_fatal=process_exit, faults=faults)
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, log_config=None, log_level="info", access_log=False,
        timeout_graceful_shutdown=settings.graceful_shutdown, **settings.uvicorn_tls(),
    )
    server = uvicorn.Server(config)
    process_exit.server = server
    logger.info("worker %s on %s://%s:%d (model %s)", settings.resolved_node(),
                "https" if settings.tls_cert else "http", settings.host, settings.port, settings.model)
    server.run()
    return process_exit.code


if __name__ == "__main__":
    sys.exit(main())

