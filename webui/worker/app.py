"""The GPU worker's HTTP app (``create_app``): one server that owns one diffusion pipeline.

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

Status codes (every error body is an ``ErrorBody``, never a traceback; ``webui.worker.http_errors``):

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
be loaded (or warmed up) makes it exit with ``EXIT_LOAD_FAILED`` (the process: ``webui.worker.serve``).

The job routes are ``webui.worker.job_routes``'s; with ``--jobs-url``, each REST job the balancer marks is also
recorded as a job of the jobs service (``webui.worker.job_record``: its id in ``X-Job-Id``).

Each request is logged as one JSON line (request id from ``X-Request-ID`` or a new one,
echoed back in the response header; ``webui.worker.request_log``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse, Response

from webui.cluster_secret import ClusterSecret, RequireClusterSecret
from webui.contract import INFO_PATH, STALLED_KEY
from webui.settings import WorkerSettings
from webui.traffic import count_traffic
from webui.worker.dispatch_agent import DispatchAgent
from webui.worker.encoder import ResultEncoder
from webui.worker.faults import FaultPlan
from webui.worker.generation import GenerationService
from webui.worker.http_errors import add_error_handlers
from webui.worker.job_record import JobRecorder
from webui.worker.job_routes import add_job_routes
from webui.worker.metrics import WorkerMetrics
from webui.worker.pipelines.base import PipelineLoader
from webui.worker.pipelines.loader import load_pipeline as load_portrait_pipeline
from webui.worker.request_log import RequestLog
from webui.worker.scheduler import JobScheduler

logger = logging.getLogger("webui.worker")


def create_app(
    settings: WorkerSettings,
    pipeline_loader: PipelineLoader = load_portrait_pipeline,
    on_fatal: Callable[[int], None] | None = None,
    faults: FaultPlan | None = None,
) -> FastAPI:
    """Build the worker's app; the pipeline loads in the background once the app starts.

    ``on_fatal(exit_code)`` is called when the worker must stop (model load failure,
    repeated OOM); ``webui.worker.serve.main`` makes it end the process after the responses in flight.
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
    recorder = JobRecorder(settings.jobs_url, node, settings) if settings.jobs_url else None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.loading = asyncio.get_running_loop().run_in_executor(scheduler.executor, service.load)
        if settings.dispatch_agent_port:
            await agent.start(settings.dispatch_agent_host or settings.host, settings.dispatch_agent_port)
        yield
        service.stop()
        if recorder is not None:
            await recorder.aclose()
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

    add_error_handlers(app, service.limits)

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

    add_job_routes(app, settings, service, scheduler, encoder, recorder)
    return app
