"""A fixed-latency stand-in for the pipeline, for benchmarks and for tests whose subject is the cluster. Not a model.

``python -m webui.worker --model standin:0.5`` serves ``StandinPipeline``: every job sleeps 0.5 s
in total (evenly over its steps, each reported through ``on_step`` like a denoising step), then
returns deterministic images of the requested size (a gradient with grain, keyed by the seed),
real images so that PNG encoding costs what it costs. ``standin:0.5/step`` sleeps 0.5 s a step instead, as a
model does: a test then picks a job's length with its steps. With the model's time fixed, a benchmark
can tell what HTTP, HAProxy and the web front add from CPU contention on a loaded machine.

It is never a default: only a ``--model`` that starts with ``standin:`` selects it, and every
description of it (``/readyz``, ``/info``, results) says ``standin (fixed latency, benchmark only)``.
Nothing about a model's behaviour can be learnt from it. It imports neither torch nor diffusers
(``webui.worker.pipelines.loader``) and its warm-up draws without the latency, so its worker is ready in
about a second whatever a job takes: tests of rolling restarts,
node hosts and failover use it where the model is not what they test.
"""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np
from PIL import Image

from webui.schema import EffectiveParams, ModelFamily, StepCallback, image_seeds
from webui.settings import WorkerSettings
from webui.worker.errors import ModelLoadError
from webui.worker.job_parsing import job_steps
from webui.worker.pipelines.base import ModelDefaults, PipelineBase

STANDIN_PREFIX = "standin:"
"""``--model standin:SECONDS`` (or ``standin:SECONDS/step``) selects the stand-in; nothing else does."""
PER_STEP = "/step"
STANDIN_MODEL = "standin (fixed latency, benchmark only)"
"""The model name the stand-in reports everywhere."""
MAX_STANDIN_SECONDS = 3600.0
STANDIN_DEFAULTS = ModelDefaults(steps=8, guidance=0.0, width=512, height=512)
STOPPED_S = 1.0
"""A sleep's wake-up this much late means the process was stopped, not that the machine is busy."""
GRAIN = 8
"""Amplitude of the per-pixel grain (0-255 scale): PNG then compresses about as badly as a photo."""


@dataclasses.dataclass(frozen=True)
class StandinLatency:
    """The stand-in's fixed time: ``seconds`` a job, or a step when ``per_step``."""

    seconds: float
    per_step: bool = False

    def job_seconds(self, steps: int) -> float:
        return self.seconds * steps if self.per_step else self.seconds


def standin_latency(model: str) -> StandinLatency | None:
    """``"standin:0.5"`` -> 0.5 s a job, ``"standin:0.5/step"`` -> 0.5 s a step; ``None`` for any other
    ``--model``; ``ModelLoadError`` for a malformed one."""
    if not model.startswith(STANDIN_PREFIX):
        return None
    text = model[len(STANDIN_PREFIX):]
    per_step = text.endswith(PER_STEP)
    try:
        seconds = float(text.removesuffix(PER_STEP))
    except ValueError:
        seconds = math.nan
    if not 0 <= seconds <= MAX_STANDIN_SECONDS:
        raise ModelLoadError(f"model {model!r}: the stand-in takes seconds per job (or per step) from 0 to "
                             f"{MAX_STANDIN_SECONDS:g}, e.g. 'standin:0.5' or 'standin:0.1/step'")
    return StandinLatency(seconds, per_step)


def standin_image(width: int, height: int, seed: int) -> Image.Image:
    """A deterministic RGB image: a diagonal gradient whose colours and grain depend on ``seed``."""
    rng = np.random.default_rng(seed)
    tint = rng.integers(0, 256, size=3)
    ys, xs = np.mgrid[0:height, 0:width]
    ramp = (xs / max(width - 1, 1) + ys / max(height - 1, 1)) * 0.5
    pixels = ramp[..., None] * 255.0 * 0.6 + tint * 0.4
    pixels += rng.integers(-GRAIN, GRAIN + 1, size=(height, width, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


class StandinPipeline(PipelineBase):
    """Sleeps its ``latency`` per job (or step), then returns ``standin_image``s of the requested size (see the
    module)."""

    def __init__(self, latency: StandinLatency | float, max_side: int) -> None:
        super().__init__(STANDIN_MODEL, ModelFamily.ZIMAGE, STANDIN_DEFAULTS, max_side)
        self.latency = latency if isinstance(latency, StandinLatency) else StandinLatency(latency)

    @classmethod
    def for_settings(cls, settings: WorkerSettings, latency: StandinLatency) -> StandinPipeline:
        """The stand-in for a worker's settings; a LoRA other than ``auto``/``none`` is refused."""
        if settings.lora not in ("auto", "none"):
            raise ModelLoadError(f"model {settings.model!r}: the stand-in takes no LoRA (got {settings.lora!r})")
        return cls(latency, settings.max_side)

    def describe(self) -> dict:
        """What ``/readyz`` shows: the stand-in's name, its latency, and no device or LoRA."""
        return {
            "model": STANDIN_MODEL,
            "family": self.family.value,
            "pipeline": type(self).__name__,
            "lora": None,
            "defaults": dataclasses.asdict(self.defaults),
            "device": "cpu",
            "seconds_per_step" if self.latency.per_step else "seconds_per_job": self.latency.seconds,
        }

    def warm_up(self, params: EffectiveParams) -> list[Image.Image]:
        """The worker's self-check: the images drawn without the job latency (a stand-in has nothing to warm up,
        so its worker is ready as soon as it answers, whatever time a job takes)."""
        self.check_inputs(params, None)
        return self.draw(params)

    @staticmethod
    def draw(params: EffectiveParams) -> list[Image.Image]:
        """Each image from its own seed (``image_seeds``), as a real model's."""
        seeds = image_seeds(params.seed, params.num_images)
        return [standin_image(params.width, params.height, seed) for seed in seeds]

    def generate(
        self, params: EffectiveParams, init_image: Image.Image | None = None, on_step: StepCallback | None = None
    ) -> list[Image.Image]:
        """Draw the images, then sleep until each step's share of the job's time is over, reporting it.

        The sleeps are measured from the start of the job, so the job takes its time in all
        (or the drawing time, if longer). A step over ``STOPPED_S`` late (the process was stopped, e.g.
        SIGSTOP, in a sleep or between two steps) moves the start by that much: like a real generation, the job
        makes no progress while its process is stopped. An exception raised by ``on_step`` stops the job.
        ``init_image`` is checked, then ignored: a retouch gets the same kind of image, with its fewer steps.
        """
        self.check_inputs(params, init_image)
        started = time.perf_counter()
        images = self.draw(params)
        total = max(1, job_steps(params))
        seconds = self.latency.job_seconds(total)
        for step in range(1, total + 1):
            due = started + seconds * step / total
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            late = time.perf_counter() - due
            if late > STOPPED_S and (delay > 0 or step > 1):  # stopped in a sleep or between steps; not drawing
                started += late
            if on_step is not None:
                on_step(step, total)
        return images
