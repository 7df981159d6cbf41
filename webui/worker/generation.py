"""The pipeline's owner inside a worker: loading, warm-up, running jobs, and what an OOM means."""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from PIL import Image

from webui.contract import EXIT_LOAD_FAILED, EXIT_OOM
from webui.images import encode_png
from webui.recipe import Recipe, png_text
from webui.schema import (
    EffectiveParams,
    GenerationRequest,
    GenerationResult,
    Limits,
    ModelFamily,
    StepCallback,
    Timings,
    WorkerInfo,
    image_seeds,
)
from webui.settings import WorkerSettings
from webui.worker.errors import GenerationFailed, JobCancelled, ModelLoadError, NotReady, OutOfMemory, one_line
from webui.worker.faults import FaultPlan
from webui.worker.job_parsing import job_steps
from webui.worker.job_stages import Generated
from webui.worker.metrics import WorkerMetrics
from webui.worker.pipelines.base import Pipeline, PipelineLoader, loaded_torch
from webui.worker.pipelines.warmup import self_check
from webui.worker.progress import StepClock

logger = logging.getLogger(__name__)

NOT_READY_RETRY_AFTER = 5


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is the device running out of memory (CUDA or host)."""
    if isinstance(exc, MemoryError):
        return True
    torch = loaded_torch()  # only a loaded pipeline can raise CUDA's OOM
    return torch is not None and isinstance(exc, torch.cuda.OutOfMemoryError)


def cuda_index(device: str) -> int | None:
    """``"cuda:1"`` -> 1, ``"cuda"`` -> 0, anything else (``"cpu"``) -> None."""
    if not device.startswith("cuda"):
        return None
    return int(device.partition(":")[2] or 0)


class GenerationService:
    """Owns the pipeline: loads and warms it up, runs jobs, and decides what an OOM means.

    ``load`` and ``run`` are called in the scheduler's generation thread only, ``encode`` in the
    worker's encoder thread.
    """

    def __init__(
        self, settings: WorkerSettings, loader: PipelineLoader, faults: FaultPlan, metrics: WorkerMetrics,
        on_fatal: Callable[[int], None],
    ) -> None:
        self.settings = settings
        self.node = settings.resolved_node()
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
        self.steps = StepClock(settings.stall_floor, settings.stall_factor)
        """The running job's denoising rhythm: ``/readyz`` reports a stall from it."""

    # -- state, read from the event loop

    def limits(self) -> Limits:
        """What this worker accepts (the model's family decides the size multiple)."""
        settings = self.settings
        return Limits(
            family=self.pipeline.family if self.pipeline else ModelFamily.ZIMAGE,
            max_images=settings.max_images, max_side=settings.max_side, max_prompt_chars=settings.max_prompt_chars,
            max_upload_bytes=settings.max_upload_bytes, max_upload_pixels=settings.max_upload_pixels,
            max_megapixel_steps=settings.max_megapixel_steps,
        )

    def require_ready(self) -> None:
        """Raise ``NotReady`` unless jobs are accepted."""
        if not self.ready:
            raise NotReady(f"The worker is not ready: {self.reason}.", retry_after=NOT_READY_RETRY_AFTER)

    def info(self) -> WorkerInfo:
        """The model, defaults and limits this worker serves; ``NotReady`` before the model is loaded."""
        if self.pipeline is None:
            raise NotReady(f"The worker has no model yet: {self.reason}.", retry_after=NOT_READY_RETRY_AFTER)
        description = self.pipeline.describe()
        return WorkerInfo(node=self.node, model=description["model"], lora=description.get("lora"),
                          defaults=description["defaults"], limits=self.limits(),
                          configuration=description.get("configuration") or {})

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
            self._self_check()
        except Exception as exc:  # noqa: BLE001 - any failure here means the worker cannot serve
            if isinstance(exc, ModelLoadError):
                logger.critical("cannot load model %r: %s", self.settings.model, exc)
            else:
                logger.critical("cannot load or warm up model %r", self.settings.model, exc_info=True)
            self._set_state(False, f"the model could not be loaded: {str(exc)[:300]}")
            self._on_fatal(EXIT_LOAD_FAILED)
            return
        description = self.pipeline.describe()
        self.metrics.info.info({
            "node": self.node, "model": self.pipeline.model_name, "family": self.pipeline.family.value,
            "device": str(description.get("device", "")), "attention": str(description.get("attention", "")),
        })
        self._set_state(True, "ready")

    def _self_check(self) -> None:
        """A small generation (warm-up, and the self-check after an OOM); raises on failure."""
        self_check(self.pipeline, self.settings.warmup_steps)

    def run(
        self, job: GenerationRequest, init_image: Image.Image | None, seed: int, received_at: float,
        cancel: threading.Event, on_progress: StepCallback | None = None, input_sha256: str | None = None,
    ) -> Generated:
        """Run one job's generation (the generation thread); raises a ``JobError`` or ``JobCancelled``.

        Encoding is left to ``encode`` (another thread), so this thread can take the next job.
        """
        self.require_ready()  # it may have changed while the job waited
        started = time.perf_counter()
        params = self.pipeline.effective_params(job, seed, init_image)

        def on_step(step: int, total: int) -> None:
            self.steps.step(step, total)
            self.metrics.steps.inc()
            if cancel.is_set():
                raise JobCancelled(f"the client went away; stopped at step {step} of {total}")
            if on_progress is not None:
                on_progress(step, total)

        if on_progress is not None:
            on_progress(0, job_steps(params))
        hook = self.faults.wrap(on_step, job.prompt, cuda=self.cuda_device is not None)
        self.metrics.generating.begin()
        try:
            with self.steps.timing():  # over before the OOM handling below runs its self-check
                images = self.pipeline.generate(params, init_image, on_step=hook)
        except JobCancelled:
            raise
        except Exception as exc:
            if is_out_of_memory(exc):
                raise self._after_out_of_memory(exc, params) from None
            logger.exception("generation failed")
            raise GenerationFailed("The generation failed unexpectedly; the error is in the worker log.") from None
        finally:
            self.metrics.generating.end()
        finished = time.perf_counter()
        self.consecutive_ooms = 0
        self.metrics.images.inc(len(images))
        self.metrics.steps_per_second.observe(job_steps(params) / max(finished - started, 1e-6))
        return Generated(images, seed, params, input_sha256, received_at, started, finished)

    def encode(self, generated: Generated) -> GenerationResult:
        """PNG-encode a finished generation into the job's result (the encoder thread), each image with its recipe."""
        provenance, params = self.pipeline.provenance(), generated.params
        seeds = image_seeds(generated.seed, len(generated.images))
        encoded = [
            encode_png(image, png_text(Recipe.of(params, provenance, seed, index, generated.input_sha256)))
            for index, (image, seed) in enumerate(zip(generated.images, seeds, strict=True))
        ]
        done = time.perf_counter()
        return GenerationResult(
            images=encoded, image=encoded[0], seed=generated.seed, seeds=seeds, params=params, worker_id=self.node,
            model=self.pipeline.model_name,
            timings=Timings(
                queue_ms=round((generated.started - generated.received_at) * 1000, 1),
                generate_ms=round((generated.finished - generated.started) * 1000, 1),
                total_ms=round((done - generated.received_at) * 1000, 1),
            ),
        )

    def _after_out_of_memory(self, exc: BaseException, params: EffectiveParams) -> OutOfMemory:
        """Count the OOM, free memory, self-check (not when it exits anyway: a quicker restart); exit after
        too many. Returns the error to raise."""
        self.metrics.out_of_memory.inc()
        self.consecutive_ooms += 1
        cause = one_line(exc, limit=200)
        logger.error(
            "out of memory (%d in a row, limit %d) at %dx%d x%d: %s", self.consecutive_ooms,
            self.settings.max_consecutive_ooms, params.width, params.height, params.num_images, cause,
        )
        self.free_memory()
        if self.consecutive_ooms >= self.settings.max_consecutive_ooms:
            why = f"{self.consecutive_ooms} jobs in a row ran out of memory"  # no self-check: it exits anyway
        else:
            why = None if self._self_check_passes() else "its self-check failed"
        if why is not None:
            self._set_state(False, f"restarting: {why}")
            logger.critical("exiting with code %d: %s", EXIT_OOM, why)
            self._on_fatal(EXIT_OOM)
        return OutOfMemory(
            f"Out of memory generating {params.num_images} image(s) of {params.width}x{params.height} "
            f"({cause}). Try a smaller resolution or fewer images.",
        )

    def _self_check_passes(self) -> bool:
        """The self-check after an OOM; False (logged) when it fails."""
        try:
            self._self_check()
        except Exception:  # noqa: BLE001 - any failure of the self-check means the device is not usable
            logger.exception("self-check after out of memory failed")
            return False
        return True

    def free_memory(self) -> None:
        """Release what a failed job left behind (and CUDA's cached blocks on a GPU)."""
        gc.collect()
        torch = loaded_torch()
        if self.cuda_device is not None and torch is not None:
            torch.cuda.empty_cache()

