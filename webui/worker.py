"""The GPU worker: one HTTP server that owns one diffusion pipeline (``python -m webui.worker``).

Routes::

    GET|POST /generate          one job -> GenerationResult JSON (base64 PNGs)
    GET|POST /generate/stream   one job -> NDJSON: ProgressEvent (step 0 when the job starts
                                running, then one per denoising step), then ResultEvent or ErrorEvent
    GET /healthz                200 while the process serves (liveness)
    GET /readyz                 200 when the model is loaded, warmed up and healthy, else 503
    GET|HEAD /                  200, a one-line JSON description
    GET /metrics                Prometheus text format (see ``webui.metrics``)

A job is a ``GenerationRequest``: a JSON object in the body, or query parameters when the
body is empty (``GET /generate?prompt=a+portrait&steps=8``).

One generation runs at a time, in the worker's own generation thread; up to
``queue_size`` more wait in arrival order. Waiting or running jobs whose client went away
are dropped (a running one at its next denoising step, which frees the GPU).

Status codes (every error body is an ``ErrorBody``, never a traceback):

* 422 ``invalid_request``/``invalid_json``/``invalid_image``: names the field and its allowed
  range; 413 body too large; 415 body not JSON.
* 503 ``busy`` (queue full, with ``Retry-After``) or ``not_ready`` (loading, warming up or
  shutting down): nothing ran, so the balancer may safely retry on another worker.
* 507 ``out_of_memory``: the job ran out of GPU (or host) memory. Deliberately *not* 503:
  HAProxy retries 503 on the next worker, which has the same GPU and would run out of memory
  on the same size too, taking every worker through an OOM for one request. 507 is not in
  HAProxy's ``retry-on`` set; the client is told to lower the resolution or image count.
* 500 ``generation_failed``/``internal_error``: unexpected; the traceback is in the log.

After an OOM the worker frees memory (``gc.collect``, ``torch.cuda.empty_cache`` on CUDA)
and runs a small self-check generation. After ``max_consecutive_ooms`` OOMs in a row, or if
the self-check fails, it turns not-ready, finishes the responses in flight and exits with
``EXIT_OOM`` so that its supervisor restarts it with a clean device. A model that cannot
be loaded (or warmed up) makes it exit with ``EXIT_LOAD_FAILED``.

Each request is logged as one JSON line (request id from ``X-Request-ID`` or a new one,
echoed back in the response header).
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import math
import secrets
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from http import HTTPStatus
from typing import Any, Generic, Protocol, TypeVar

import uvicorn
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from PIL import Image
from pydantic import ValidationError
from pydantic_settings import CliApp
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from webui.faults import FaultPlan
from webui.images import UploadError, decode_upload, encode_png
from webui.metrics import WorkerMetrics
from webui.schema import (
    EffectiveParams,
    ErrorBody,
    ErrorEvent,
    GenerationRequest,
    GenerationResult,
    Limits,
    ModelFamily,
    ProgressEvent,
    ResultEvent,
    Timings,
)
from webui.settings import EXIT_LOAD_FAILED, EXIT_OOM, WorkerSettings

logger = logging.getLogger("webui.worker")  # also when run as __main__
access_logger = logging.getLogger("webui.worker.access")

WARMUP_SIDE = 256
"""Width and height of the warm-up and post-OOM self-check generations."""
PROBE_PROMPT = "warm-up: a portrait photo"
MAX_SEED = 2**32 - 1
JSON_BODY_SLACK = 64 * 1024
"""Bytes a JSON body may have on top of the base64 of the largest allowed upload."""
CLIENT_GONE_STATUS = 499
"""Logged (nginx's convention) when the client left before its job finished; nobody receives it."""
NOT_READY_RETRY_AFTER = 5
ENDPOINTS = ("/", "/healthz", "/readyz", "/metrics", "/generate", "/generate/stream")
PROBE_ENDPOINTS = frozenset({"/", "/healthz", "/readyz", "/metrics"})
"""Endpoints balancers and scrapers poll: logged at DEBUG so the log stays readable."""

T = TypeVar("T")
StepCallback = Callable[[int, int], None]


class Pipeline(Protocol):
    """What the worker needs from ``webui.pipeline.PortraitPipeline``."""

    family: ModelFamily
    model_name: str

    def describe(self) -> dict: ...

    def effective_params(
        self, request: GenerationRequest, seed: int, init_image: Image.Image | None = None
    ) -> EffectiveParams: ...

    def generate(
        self, params: EffectiveParams, init_image: Image.Image | None = None, on_step: StepCallback | None = None
    ) -> list[Image.Image]: ...


PipelineLoader = Callable[[WorkerSettings], Pipeline]


def load_portrait_pipeline(settings: WorkerSettings) -> Pipeline:
    """The default loader (imported here, in the loading thread, so ``/healthz`` is up at once)."""
    from webui.pipeline import PortraitPipeline

    return PortraitPipeline.load(settings)


# --------------------------------------------------------------------------- errors


class ApiError(Exception):
    """A request that ends with an error status and an ``ErrorBody``."""

    def __init__(
        self, status: int, error: str, detail: str, fields: list[dict] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.body = ErrorBody(error=error, detail=detail, fields=fields or [])
        self.headers = dict(headers or {})


class JobCancelled(Exception):
    """The job's client went away; raised inside the job to stop it."""


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is the device running out of memory (CUDA or host)."""
    if isinstance(exc, MemoryError):
        return True
    torch = sys.modules.get("torch")  # only a loaded pipeline can raise CUDA's OOM
    return torch is not None and isinstance(exc, torch.cuda.OutOfMemoryError)


def cuda_index(device: str) -> int | None:
    """``"cuda:1"`` -> 1, ``"cuda"`` -> 0, anything else (``"cpu"``) -> None."""
    if not device.startswith("cuda"):
        return None
    return int(device.partition(":")[2] or 0)


def schema_range(name: str) -> str:
    """``from 0.0 to 30.0`` or ``above 0.0 and at most 1.0``: a ``GenerationRequest`` field's bounds."""
    bounds = {
        key: getattr(item, key)
        for item in GenerationRequest.model_fields[name].metadata
        for key in ("ge", "gt", "le")
        if hasattr(item, key)
    }
    if "gt" in bounds:
        return f"above {bounds['gt']} and at most {bounds['le']}"
    return f"from {bounds['ge']} to {bounds['le']}"


def allowed_values(limits: Limits) -> dict[str, str]:
    """For each request field, what it may be (shown next to a field's error)."""
    size = f"an integer from 64 to {limits.max_side}, a multiple of {limits.family.size_multiple}"
    allowed = {
        "prompt": f"text of 1 to {limits.max_prompt_chars} characters",
        "negative_prompt": f"text of at most {limits.max_prompt_chars} characters",
        "steps": f"an integer from 1 to {limits.max_steps}",
        "width": size,
        "height": size,
        "num_images": f"an integer from 1 to {limits.max_images}",
        "init_image": f"a base64 PNG, JPEG or WebP image of at most {limits.max_upload_bytes} bytes "
        f"and {limits.max_upload_pixels} pixels",
    }
    for name in ("guidance", "lora_scale", "strength"):
        allowed[name] = f"a number {schema_range(name)}"
    allowed["seed"] = f"an integer {schema_range('seed')}"
    return allowed


def validation_problems(errors: list[dict], limits: Limits) -> list[dict]:
    """Pydantic errors as ``{"field", "message", "allowed"}`` dicts (never echoing the input)."""
    allowed = allowed_values(limits)
    known = ", ".join(GenerationRequest.model_fields)
    problems = []
    for error in errors:
        field = ".".join(str(part) for part in error.get("loc", ()) if part not in ("body", "query"))
        if not field and error.get("type") == "value_error":
            # The schema's cross-field check joins its findings as "field: problem; field: problem".
            cause = str(error.get("ctx", {}).get("error", error.get("msg", "")))
            pairs = [part.partition(": ") for part in cause.split("; ")]
            problems.extend({"field": name, "message": message} for name, _, message in pairs)
        elif error.get("type") == "extra_forbidden":
            problems.append({"field": field, "message": "unknown field", "allowed": f"the fields {known}"})
        else:
            problems.append({"field": field or "body", "message": error.get("msg", "invalid")})
    for problem in problems:
        if problem["field"] in allowed:
            problem.setdefault("allowed", allowed[problem["field"]])
    return problems


def invalid_request(problems: list[dict]) -> ApiError:
    """A 422 naming every problem and what each field allows."""
    parts = [
        f"{p['field']}: {p['message']}" + (f" (allowed: {p['allowed']})" if p.get("allowed") else "") for p in problems
    ]
    return ApiError(422, "invalid_request", "Invalid request: " + "; ".join(parts), fields=problems)


# --------------------------------------------------------------------------- request parsing


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) more than ``limit`` bytes before reading them all."""
    declared = request.headers.get("content-length", "")
    too_large = ApiError(413, "body_too_large", f"The request body is larger than {limit} bytes.")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_payload(body: bytes, content_type: str, query: Mapping[str, str]) -> dict[str, Any]:
    """The job's fields: the JSON body if there is one, else the query parameters."""
    if not body.strip():
        return dict(query)
    media = content_type.split(";")[0].strip().lower()
    # No content type, or curl's default form type for ``-d '{...}'``: read it as JSON too.
    if media not in ("", "application/json", "application/x-www-form-urlencoded") and not media.endswith("+json"):
        raise ApiError(415, "unsupported_media_type", f"Send the job as JSON (Content-Type: application/json), not {media}.")
    try:
        data = json.loads(body, parse_constant=_no_constants)
    except (ValueError, RecursionError) as exc:
        raise ApiError(422, "invalid_json", f"The body is not valid JSON: {str(exc)[:200]}") from None
    if not isinstance(data, dict):
        kind = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(type(data), "a number")
        raise ApiError(422, "invalid_json", f"The body must be a JSON object of job fields, not {kind}.")
    return data


def validate_job(payload: dict[str, Any], limits: Limits) -> GenerationRequest:
    """Validate the job's fields against the worker's limits (422 on any problem)."""
    try:
        return GenerationRequest.model_validate(payload, context={"limits": limits})
    except ValidationError as exc:
        raise invalid_request(validation_problems(exc.errors(include_url=False), limits)) from None


def params_summary(job: GenerationRequest) -> dict[str, Any]:
    """What the request log shows of a job (not the prompt itself)."""
    return {
        "mode": "retouch" if job.init_image is not None else "text2img",
        "steps": job.steps, "width": job.width, "height": job.height, "num_images": job.num_images,
        "seed": job.seed, "lora_scale": job.lora_scale, "prompt_chars": len(job.prompt),
    }


def expected_steps(params: EffectiveParams) -> int:
    """Denoising steps the pipeline will run: fewer for a retouch (diffusers' ``get_timesteps``)."""
    if params.mode != "retouch" or params.strength is None:
        return params.steps
    return params.steps - int(max(params.steps - params.steps * params.strength, 0))


# --------------------------------------------------------------------------- scheduling


class Job(Generic[T]):
    """One admitted job: its place in the queue, its cancel switch and its outcome."""

    def __init__(self) -> None:
        self.cancel = threading.Event()
        """Set when the client is gone; the generation thread stops at the next step."""
        self.abandoned = asyncio.Event()
        self.running = False
        self.task: asyncio.Task[T] | None = None

    def abandon(self) -> str:
        """The client went away: drop the job if it waits, stop it at the next step if it runs.

        Returns the request's outcome for the log: ``dropped`` (it waited) or ``cancelled``.
        """
        self.cancel.set()
        self.abandoned.set()
        return "cancelled" if self.running else "dropped"


class JobScheduler:
    """Runs one job at a time in a dedicated thread; at most ``queue_size`` more wait (FIFO)."""

    def __init__(self, queue_size: int) -> None:
        self.queue_size = queue_size
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="generation")
        self._slot = asyncio.Lock()
        self._admitted = 0
        self._running = False
        self._jobs: set[Job] = set()
        self._seconds_per_job = 1.0

    @property
    def busy(self) -> bool:
        """Whether a job is running."""
        return self._running

    @property
    def queue_depth(self) -> int:
        """Jobs admitted and waiting behind the running one."""
        return self._admitted - int(self._running)

    def retry_after(self) -> int:
        """Seconds until a slot is likely free (for ``Retry-After``), from recent job durations."""
        return max(1, min(60, math.ceil(self._seconds_per_job * (self.queue_depth + 1))))

    def submit(self, work: Callable[[threading.Event], T]) -> Job[T]:
        """Admit ``work(cancel_event)`` or raise 503 ``busy``; it starts when the slot is free."""
        if self._admitted >= self.queue_size + 1:
            raise ApiError(
                503, "busy",
                f"The worker is busy: one job is running and {self.queue_depth} are waiting (the most it queues). "
                "Retry later or on another worker.",
                headers={"Retry-After": str(self.retry_after())},
            )
        job: Job[T] = Job()
        self._admitted += 1
        self._jobs.add(job)
        job.task = asyncio.ensure_future(self._run(job, work))
        job.task.add_done_callback(self._mark_seen)
        return job

    @staticmethod
    def _mark_seen(task: asyncio.Task) -> None:
        """Mark a job's exception as handled: when its client left, nobody awaits it any more
        (the service has logged real failures; ``JobCancelled`` is expected)."""
        if not task.cancelled():
            task.exception()

    async def _run(self, job: Job[T], work: Callable[[threading.Event], T]) -> T:
        try:
            await self._wait_for_slot(job)
            try:
                self._running = job.running = True
                started = time.perf_counter()
                result = await asyncio.get_running_loop().run_in_executor(self.executor, work, job.cancel)
                self._seconds_per_job = 0.7 * self._seconds_per_job + 0.3 * (time.perf_counter() - started)
                return result
            finally:
                self._running = job.running = False
                self._slot.release()
        finally:
            self._admitted -= 1
            self._jobs.discard(job)

    async def _wait_for_slot(self, job: Job) -> None:
        """Take the slot, or raise ``JobCancelled`` if the job is abandoned first."""
        acquire = asyncio.ensure_future(self._slot.acquire())
        gone = asyncio.ensure_future(job.abandoned.wait())
        acquired = False
        try:
            await asyncio.wait({acquire, gone}, return_when=asyncio.FIRST_COMPLETED)
            acquired = acquire.done() and not job.abandoned.is_set()
        finally:
            gone.cancel()
            if not acquired:
                if acquire.done() and not acquire.cancelled():
                    self._slot.release()
                else:
                    acquire.cancel()  # asyncio.Lock hands the slot on if it was just granted to us
        if not acquired:
            raise JobCancelled("the client went away while the job was waiting")

    def close(self) -> None:
        """Stop all jobs (at their next step) and the thread; for shutdown."""
        for job in list(self._jobs):
            job.abandon()
        self.executor.shutdown(wait=False, cancel_futures=True)


# --------------------------------------------------------------------------- the pipeline's owner


class GenerationService:
    """Owns the pipeline: loads and warms it up, runs jobs, and decides what an OOM means.

    ``load`` and ``run`` are called in the scheduler's generation thread only.
    """

    def __init__(
        self, settings: WorkerSettings, loader: PipelineLoader, faults: FaultPlan, metrics: WorkerMetrics,
        on_fatal: Callable[[int], None],
    ) -> None:
        self.settings = settings
        self.worker_id = settings.resolved_worker_id()
        self.faults = faults
        self.metrics = metrics
        self._loader = loader
        self._on_fatal = on_fatal
        self.pipeline: Pipeline | None = None
        self.cuda_device: int | None = None
        """The CUDA device index the pipeline runs on; None on CPU (or before loading)."""
        self.ready = False
        self.reason = "starting"
        self.consecutive_ooms = 0

    # -- state, read from the event loop

    def limits(self) -> Limits:
        """What this worker accepts (the model's family decides the size multiple)."""
        settings = self.settings
        return Limits(
            family=self.pipeline.family if self.pipeline else ModelFamily.ZIMAGE,
            max_images=settings.max_images, max_side=settings.max_side, max_prompt_chars=settings.max_prompt_chars,
            max_upload_bytes=settings.max_upload_bytes, max_upload_pixels=settings.max_upload_pixels,
        )

    def require_ready(self) -> None:
        """Raise 503 ``not_ready`` unless jobs are accepted."""
        if not self.ready:
            raise ApiError(
                503, "not_ready", f"The worker is not ready: {self.reason}.",
                headers={"Retry-After": str(NOT_READY_RETRY_AFTER)},
            )

    def describe(self) -> dict[str, Any] | None:
        """The pipeline's own description, or None before it is loaded."""
        return self.pipeline.describe() if self.pipeline else None

    def stop(self) -> None:
        """Take no more jobs (shutdown)."""
        self._set_state(False, "shutting down")

    def _set_state(self, ready: bool, reason: str) -> None:
        self.ready, self.reason = ready, reason
        logger.info("readiness: %s (%s)", "ready" if ready else "not ready", reason)

    # -- work, in the generation thread

    def load(self) -> None:
        """Load the pipeline and warm it up; on failure ask to exit with ``EXIT_LOAD_FAILED``."""
        self._set_state(False, "loading the model")
        try:
            self.pipeline = self._loader(self.settings)
            self.cuda_device = cuda_index(str(self.pipeline.describe().get("device", "cpu")))
            self._set_state(False, "warming up")
            self._probe()
        except Exception as exc:  # noqa: BLE001 - any failure here means the worker cannot serve
            if type(exc).__name__ == "ModelLoadError":
                logger.critical("cannot load model %r: %s", self.settings.model, exc)
            else:
                logger.critical("cannot load or warm up model %r", self.settings.model, exc_info=True)
            self._set_state(False, f"the model could not be loaded: {str(exc)[:300]}")
            self._on_fatal(EXIT_LOAD_FAILED)
            return
        description = self.pipeline.describe()
        self.metrics.info.info({
            "worker_id": self.worker_id, "model": self.pipeline.model_name, "family": self.pipeline.family.value,
            "device": str(description.get("device", "")), "attention": str(description.get("attention", "")),
        })
        self._set_state(True, "ready")

    def _probe(self) -> None:
        """A small generation (warm-up, and the self-check after an OOM); raises on failure."""
        request = GenerationRequest(
            prompt=PROBE_PROMPT, steps=self.settings.warmup_steps, width=WARMUP_SIDE, height=WARMUP_SIDE, seed=0
        )
        self.pipeline.generate(self.pipeline.effective_params(request, seed=0))

    def run(
        self, job: GenerationRequest, init_image: Image.Image | None, seed: int, received_at: float,
        cancel: threading.Event, on_progress: StepCallback | None = None,
    ) -> GenerationResult:
        """Run one job to its result; raises ``ApiError`` or ``JobCancelled``."""
        self.require_ready()  # it may have changed while the job waited
        started = time.perf_counter()
        params = self.pipeline.effective_params(job, seed, init_image)

        def on_step(step: int, total: int) -> None:
            self.metrics.steps.inc()
            if cancel.is_set():
                raise JobCancelled(f"the client went away; stopped at step {step} of {total}")
            if on_progress is not None:
                on_progress(step, total)

        if on_progress is not None:
            on_progress(0, expected_steps(params))
        hook = self.faults.wrap(on_step, job.prompt, cuda=self.cuda_device is not None)
        try:
            images = self.pipeline.generate(params, init_image, on_step=hook)
        except JobCancelled:
            raise
        except Exception as exc:
            if is_out_of_memory(exc):
                raise self._after_out_of_memory(exc, params) from None
            logger.exception("generation failed")
            raise ApiError(500, "generation_failed", "The generation failed unexpectedly; the error is in the worker log.") from None
        finished = time.perf_counter()
        self.consecutive_ooms = 0
        self.metrics.images.inc(len(images))
        self.metrics.steps_per_second.observe(expected_steps(params) * len(images) / max(finished - started, 1e-6))
        encoded = [encode_png(image) for image in images]
        done = time.perf_counter()
        return GenerationResult(
            images=encoded, image=encoded[0], seed=seed, params=params, worker_id=self.worker_id,
            model=self.pipeline.model_name,
            timings=Timings(
                queue_ms=round((started - received_at) * 1000, 1),
                generate_ms=round((finished - started) * 1000, 1),
                total_ms=round((done - received_at) * 1000, 1),
            ),
        )

    def _after_out_of_memory(self, exc: BaseException, params: EffectiveParams) -> ApiError:
        """Count the OOM, free memory, self-check; exit after too many. Returns the 507 to send."""
        self.metrics.out_of_memory.inc()
        self.consecutive_ooms += 1
        cause = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        logger.error(
            "out of memory (%d in a row, limit %d) at %dx%d x%d: %s", self.consecutive_ooms,
            self.settings.max_consecutive_ooms, params.width, params.height, params.num_images, cause,
        )
        self.free_memory()
        try:
            self._probe()
            healthy = True
        except Exception:  # noqa: BLE001 - any failure of the self-check means the device is not usable
            logger.exception("self-check after out of memory failed")
            healthy = False
        if not healthy or self.consecutive_ooms >= self.settings.max_consecutive_ooms:
            why = "its self-check failed" if not healthy else f"{self.consecutive_ooms} jobs in a row ran out of memory"
            self._set_state(False, f"restarting: {why}")
            logger.critical("exiting with code %d: %s", EXIT_OOM, why)
            self._on_fatal(EXIT_OOM)
        return ApiError(
            507, "out_of_memory",
            f"Out of memory generating {params.num_images} image(s) of {params.width}x{params.height} "
            f"({type(exc).__name__}: {cause}). Try a smaller resolution or fewer images.",
        )

    def free_memory(self) -> None:
        """Release what a failed job left behind (and CUDA's cached blocks on a GPU)."""
        gc.collect()
        if self.cuda_device is not None:
            import torch

            torch.cuda.empty_cache()


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

    def __init__(self, app: ASGIApp, worker_id: str, metrics: WorkerMetrics) -> None:
        self.app = app
        self.worker_id = worker_id
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = given if given.isprintable() and 0 < len(given) <= 128 else uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode("latin-1"))]
            await send(message)

        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            path = scope["path"]
            endpoint = path if path in ENDPOINTS else "other"
            outcome = state.get("outcome") or status_outcome(status)
            self.metrics.observe_request(endpoint, outcome, seconds)
            line = {
                "request_id": request_id, "method": scope["method"], "endpoint": endpoint, "status": status,
                "outcome": outcome, "duration_ms": round(seconds * 1000, 1), "worker_id": self.worker_id,
                **({"params": state["params"]} if "params" in state else {}),
            }
            access_logger.log(logging.DEBUG if endpoint in PROBE_ENDPOINTS else logging.INFO, json.dumps(line))


# --------------------------------------------------------------------------- HTTP


def error_response(request: Request, error: ApiError) -> JSONResponse:
    """The JSON response for ``error`` (and its outcome for the request log)."""
    request.state.outcome = error.body.error
    return JSONResponse(error.body.model_dump(), status_code=error.status, headers=error.headers)


async def wait_for_disconnect(receive: Receive) -> None:
    """Return when the client disconnects (call after the body has been read)."""
    while (await receive())["type"] != "http.disconnect":
        pass


class JobStream(StreamingResponse):
    """An NDJSON job stream that abandons its job however the response ends (e.g. client gone)."""

    def __init__(self, content: AsyncIterator[str], job: Job) -> None:
        super().__init__(content, media_type="application/x-ndjson", headers={"Cache-Control": "no-store"})
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
    worker_id = settings.resolved_worker_id()
    metrics = WorkerMetrics()
    scheduler = JobScheduler(settings.queue_size)
    service = GenerationService(
        settings, pipeline_loader, faults if faults is not None else FaultPlan.from_env(), metrics,
        on_fatal or (lambda code: logger.critical("fatal (exit code %d) but no process hook; staying up", code)),
    )
    metrics.track(
        queue_depth=lambda: scheduler.queue_depth, busy=lambda: scheduler.busy, ready=lambda: service.ready,
        cuda_device=lambda: service.cuda_device,
    )
    max_body = settings.max_upload_bytes * 4 // 3 + JSON_BODY_SLACK

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.loading = asyncio.get_running_loop().run_in_executor(scheduler.executor, service.load)
        yield
        service.stop()
        scheduler.close()

    app = FastAPI(title="portrait-ha worker", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service = service
    app.state.scheduler = scheduler
    app.state.metrics = metrics
    app.add_middleware(RequestLog, worker_id=worker_id, metrics=metrics)

    @app.exception_handler(ApiError)
    async def on_api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(request, exc)

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

    async def admit(request: Request) -> tuple[GenerationRequest, Image.Image | None, int]:
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
        return job, init_image, seed

    @app.api_route("/", methods=["GET", "HEAD"])
    async def root() -> dict[str, Any]:
        return {"service": "portrait-ha worker", "worker_id": worker_id, "ready": service.ready}

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"alive": True, "worker_id": worker_id}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        body = {
            "ready": service.ready, "reason": service.reason, "busy": scheduler.busy,
            "queue_depth": scheduler.queue_depth, "worker_id": worker_id,
            "consecutive_ooms": service.consecutive_ooms, "pipeline": service.describe(),
        }
        return JSONResponse(jsonable_encoder(body), status_code=200 if service.ready else 503)

    @app.get("/metrics")
    async def metrics_endpoint() -> Response:
        content, content_type = metrics.render()
        return Response(content, media_type=content_type)

    @app.api_route("/generate", methods=["GET", "POST"])
    async def generate(request: Request) -> Response:
        received = time.perf_counter()
        job_request, init_image, seed = await admit(request)
        job = scheduler.submit(lambda cancel: service.run(job_request, init_image, seed, received, cancel))
        watcher = asyncio.ensure_future(wait_for_disconnect(request.receive))
        try:
            await asyncio.wait({job.task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watcher.cancel()
        if not job.task.done():
            request.state.outcome = job.abandon()
        try:
            result = await job.task
        except JobCancelled as exc:
            logger.info("job %s: %s", request.state.outcome, exc)
            return Response(status_code=CLIENT_GONE_STATUS)
        return JSONResponse(result.model_dump())

    @app.api_route("/generate/stream", methods=["GET", "POST"])
    async def generate_stream(request: Request) -> Response:
        received = time.perf_counter()
        job_request, init_image, seed = await admit(request)
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[ProgressEvent | None] = asyncio.Queue()

        def on_progress(step: int, total: int) -> None:
            event = ProgressEvent(step=step, total=total, worker_id=worker_id)
            loop.call_soon_threadsafe(events.put_nowait, event)

        job = scheduler.submit(lambda cancel: service.run(job_request, init_image, seed, received, cancel, on_progress))
        # Runs after every progress event the thread queued: the thread's calls come first.
        job.task.add_done_callback(lambda _: events.put_nowait(None))

        async def lines() -> AsyncIterator[str]:
            while (event := await events.get()) is not None:
                yield event.model_dump_json() + "\n"
            try:
                result = job.task.result()
            except JobCancelled:
                return  # JobStream noted the outcome when the client left
            except ApiError as exc:
                request.state.outcome = exc.body.error
                yield ErrorEvent(status=exc.status, error=exc.body).model_dump_json() + "\n"
                return
            except Exception:
                logger.exception("unexpected error in a streamed job")
                request.state.outcome = "internal_error"
                body = ErrorBody(error="internal_error", detail="Unexpected error; it is in the worker log.")
                yield ErrorEvent(status=500, error=body).model_dump_json() + "\n"
                return
            request.state.outcome = "ok"
            yield ResultEvent(result=result).model_dump_json() + "\n"

        return JobStream(lines(), job)

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
    try:
        settings = CliApp.run(WorkerSettings, cli_args=argv)
        faults = FaultPlan.from_env()
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']} (got {e['input']!r})" for e in exc.errors())
        print(f"python -m webui.worker: invalid setting: {problems}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    process_exit = ProcessExit()
    app = create_app(settings, on_fatal=process_exit, faults=faults)
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, log_config=None, log_level="info", access_log=False,
        timeout_graceful_shutdown=settings.graceful_shutdown,
    )
    server = uvicorn.Server(config)
    process_exit.server = server
    logger.info("worker %s on http://%s:%d (model %s)", settings.resolved_worker_id(), settings.host, settings.port,
                settings.model)
    server.run()
    return process_exit.code


if __name__ == "__main__":
    sys.exit(main())
