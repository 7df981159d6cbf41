"""Timing one job along the bare diffusers loop and the worker's serving path, interleaved run by run."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from bench.gpu.probe import Probe
from bench.gpu.rows import PathTiming, Size
from bench.report import LatencyStats

if TYPE_CHECKING:
    from webui.worker.pipelines.diffusers import PortraitPipeline

logger = logging.getLogger(__name__)


PROMPT = "studio portrait of a woman with short dark hair, soft window light, 85mm"


Job = Callable[[int], object]
"""One generation; its argument is the seed."""


def bare_job(pipe, size: Size, steps: int, num_images: int = 1) -> Job:
    """The bare diffusers loop: ``ZImagePipeline.__call__`` as Z-Image-Turbo's model card calls it."""
    import torch

    def run(seed: int) -> object:
        with torch.inference_mode():
            return pipe(prompt=PROMPT, height=size.height, width=size.width, num_inference_steps=steps,
                        guidance_scale=0.0, num_images_per_prompt=num_images,
                        generator=torch.Generator("cpu").manual_seed(seed)).images

    return run


def serving_job(portrait: PortraitPipeline, size: Size, steps: int, num_images: int = 1) -> Job:
    """The worker's path: ``PortraitPipeline.generate`` with a per-step callback, as the worker streams progress."""
    from webui.schema import EffectiveParams

    def run(seed: int) -> object:
        params = EffectiveParams(prompt=PROMPT, negative_prompt="", steps=steps, guidance=0.0, width=size.width,
                                 height=size.height, seed=seed, lora_scale=1.0, num_images=num_images,
                                 mode="text2img")
        return portrait.generate(params, on_step=lambda step, total: None)

    return run


def time_paths(paths: Mapping[str, Job], runs: int, warmup: int, probe: Probe, seed: int = 0) -> dict[str, PathTiming]:
    """Warm every path up, then run them interleaved ``runs`` times (order alternating), the same seeds on each.

    Each timed run is bracketed by device synchronisation; its peak memory is tracked per path.
    """
    first: dict[str, float] = {}
    for name, job in paths.items():
        for index in range(warmup):
            elapsed = _timed(job, seed + index, probe)
            first.setdefault(name, elapsed)
            logger.info("warm-up %s %d/%d: %.2fs", name, index + 1, warmup, elapsed)
    samples: dict[str, list[float]] = {name: [] for name in paths}
    peaks = dict.fromkeys(paths, 0)
    names = list(paths)
    for index in range(runs):
        for name in names if index % 2 == 0 else names[::-1]:
            probe.reset_peak()
            samples[name].append(_timed(paths[name], seed + index, probe))
            peaks[name] = max(peaks[name], probe.peak_bytes())
    return {name: PathTiming(LatencyStats.from_seconds(samples[name]), peaks[name], first.get(name))
            for name in paths}


def _timed(job: Job, seed: int, probe: Probe) -> float:
    probe.sync()
    started = time.perf_counter()
    job(seed)
    probe.sync()
    return time.perf_counter() - started
