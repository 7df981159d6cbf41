"""What every servable pipeline shares, and the choice of what a worker serves; no torch, no diffusers.

``load_pipeline`` gives ``webui.worker.pipelines.diffusers.PortraitPipeline`` (a real diffusers model, whose
modules import torch and diffusers: seconds of a worker's start; a model that is missing, or not of a
known kind, fails before them: ``webui.worker.pipelines.sources``) or, for ``--model standin:SECONDS``,
the benchmarks' fixed-latency stand-in (``webui.worker.pipelines.standin``, not a model), which imports
neither, so a stand-in worker is ready in about a second.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from PIL import Image

from webui.schema import EffectiveParams, GenerationRequest, ModelFamily
from webui.settings import WorkerSettings


@dataclass(frozen=True)
class ModelDefaults:
    """What a request gets when it leaves a parameter out."""

    steps: int
    guidance: float
    width: int
    height: int


class PipelineBase:
    """What every servable pipeline shares: its name, family, defaults, and how a request becomes parameters.

    ``PortraitPipeline`` (a real diffusers model) and ``webui.worker.pipelines.standin.StandinPipeline``
    (the benchmarks' fixed-latency stand-in) build on it; subclasses add ``describe`` and ``generate``.
    """

    def __init__(self, model_name: str, family: ModelFamily, defaults: ModelDefaults, max_side: int) -> None:
        self.model_name = model_name
        self.family: ModelFamily = family
        self.defaults = defaults
        self.max_side = max_side

    def effective_params(
        self, request: GenerationRequest, seed: int, init_image: Image.Image | None = None
    ) -> EffectiveParams:
        """Fill the request's gaps with the model's defaults.

        For a retouch without width and height, ``init_image`` (the decoded upload) sets the
        aspect ratio: the result has about the model's default pixel count in that aspect.
        """
        width, height = request.width, request.height
        if request.init_image is not None and init_image is not None and (width is None or height is None):
            width, height = self._retouch_size(init_image.size, width, height)
        return EffectiveParams(
            prompt=request.prompt,
            negative_prompt=request.negative_prompt,
            steps=request.steps or self.defaults.steps,
            guidance=self.defaults.guidance if request.guidance is None else request.guidance,
            width=width or self.defaults.width,
            height=height or self.defaults.height,
            seed=seed,
            lora_scale=request.lora_scale,
            num_images=request.num_images,
            mode="retouch" if request.init_image is not None else "text2img",
            strength=request.strength if request.init_image is not None else None,
        )

    def place(self) -> None:
        """Move the weights to the device planned for them (a warm standby loads them to host memory first)."""

    def pin_host_memory(self) -> int:
        """Page-lock weights held in host memory for a faster ``place``; the bytes pinned (0: nothing to do)."""
        return 0

    def _retouch_size(self, size: tuple[int, int], width: int | None, height: int | None) -> tuple[int, int]:
        """The output size for an input of ``size``: keep its aspect, fill in what is missing."""
        aspect = size[0] / size[1]
        if width is None and height is None:
            area = self.defaults.width * self.defaults.height
            return self._snap(math.sqrt(area * aspect)), self._snap(math.sqrt(area / aspect))
        if width is None:
            return self._snap(height * aspect), height
        return width, self._snap(width / aspect)

    def _snap(self, value: float) -> int:
        """Round to the family's size multiple, within ``[multiple, max_side]``."""
        multiple = self.family.size_multiple
        return min(max(multiple, round(value / multiple) * multiple), self.max_side - self.max_side % multiple)


def load_pipeline(settings: WorkerSettings, place: bool = True) -> PipelineBase:
    """What a worker serves for ``settings.model``: ``standin:SECONDS`` (benchmarks only) or a real model;
    ``place=False`` leaves a real model's weights in host memory (a warm standby's, until ``place``)."""
    from webui.worker.pipelines.standin import StandinPipeline, standin_seconds

    seconds = standin_seconds(settings.model)
    if seconds is not None:
        return StandinPipeline.for_settings(settings, seconds)
    from webui.worker.pipelines.sources import detect_family, resolve_source

    # What is named must exist and be a model of a known kind, and the device one this machine has, before
    # diffusers' seconds of imports (the device plan needs torch only).
    source = resolve_source(settings.model, settings.lora, settings.cache_dir)
    family = detect_family(source)
    from webui.worker.pipelines.device import device_plan

    plan = device_plan(settings)
    from webui.worker.pipelines.diffusers import PortraitPipeline

    return PortraitPipeline.load(settings, place=place, source=source, family=family, plan=plan)
