"""What every pipeline a worker serves shares: defaults, the request -> parameters step, the input checks.

``Pipeline`` is the shape the worker needs; ``PipelineBase`` gives it to the real diffusers model
(``webui.worker.pipelines.diffusers.PortraitPipeline``) and to the benchmarks' fixed-latency stand-in
(``webui.worker.pipelines.standin.StandinPipeline``) alike. No torch, no diffusers here.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Protocol

from PIL import Image

from webui.recipe import Provenance
from webui.schema import EffectiveParams, GenerationRequest, ModelFamily, StepCallback
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

    Subclasses add ``describe`` and ``generate``, which calls ``check_inputs`` first.
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

    def provenance(self) -> Provenance:
        """What every image's recipe says of the pipeline (model, weights hashes, scheduler, versions): the name
        alone here; a real model's is computed once, when it loads."""
        return Provenance(model=self.model_name)

    def warm_up(self, params: EffectiveParams) -> list[Image.Image]:
        """The self-check's generation (``webui.worker.pipelines.warmup``): ``generate`` itself by default."""
        return self.generate(params)  # type: ignore[attr-defined]

    def check_inputs(self, params: EffectiveParams, init_image: Image.Image | None) -> None:
        """Refuse parameters no pipeline can run, before any work (as diffusers' ``check_inputs``): ``ValueError``.

        The worker validates requests against its limits first; this guards the pipelines' own callers
        (warm-up, benchmarks, tests) and keeps every pipeline to the same rules.
        """
        multiple = self.family.size_multiple
        for name in ("width", "height"):
            value = getattr(params, name)
            if value < multiple or value % multiple:
                raise ValueError(f"{name}: {value} is not a positive multiple of {multiple} ({self.family.value})")
        if params.steps < 1 or params.num_images < 1:
            raise ValueError(f"steps ({params.steps}) and num_images ({params.num_images}) must be at least 1")
        if params.mode == "retouch" and init_image is None:
            raise ValueError("init_image: a retouch job needs an input image")

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


class Pipeline(Protocol):
    """What the worker needs from a pipeline (``PipelineBase`` and its subclasses)."""

    family: ModelFamily
    model_name: str

    def describe(self) -> dict: ...

    def provenance(self) -> Provenance: ...

    def place(self) -> None: ...

    def pin_host_memory(self) -> int: ...

    def effective_params(
        self, request: GenerationRequest, seed: int, init_image: Image.Image | None = None
    ) -> EffectiveParams: ...

    def generate(
        self, params: EffectiveParams, init_image: Image.Image | None = None, on_step: StepCallback | None = None
    ) -> list[Image.Image]: ...

    def warm_up(self, params: EffectiveParams) -> list[Image.Image]: ...


PipelineLoader = Callable[[WorkerSettings], Pipeline]
"""Settings -> a loaded pipeline (``webui.worker.pipelines.loader.load_pipeline``; tests pass their own)."""


def loaded_torch() -> ModuleType | None:
    """torch if a pipeline imported it (``loader`` does, for a real model), else None.

    What matters only on a GPU (memory gauges, ``empty_cache``, CUDA's OOM) reads it from here instead of
    importing torch: with a CUDA device in use, a real model, and so torch, is loaded.
    """
    return sys.modules.get("torch")
