"""The worker's diffusion pipeline: load once, then generate text-to-image or retouch jobs.

```python
pipe = PortraitPipeline.load(settings)
params = pipe.effective_params(request, seed=1234)
images = pipe.generate(params, on_step=lambda step, total: print(step, total))
```

Determinism: image ``i`` of a request is drawn from its own CPU ``torch.Generator`` seeded
with ``seed + i``, so the same seed and parameters give the same images on any run, and
image ``i`` of a batch starts from the same noise as a one-image request with ``seed + i``.

``load_pipeline`` is what a worker serves: ``PortraitPipeline.load``, or for ``--model
standin:SECONDS`` the benchmarks' fixed-latency stand-in (``webui.worker.standin``, not a model).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time

import torch
from PIL import Image, ImageOps

from webui.contract import MAX_SIDE
from webui.schema import EffectiveParams, GenerationRequest, ModelFamily, StepCallback
from webui.settings import WorkerSettings
from webui.worker.device import DeviceError, DevicePlan, apply_plan, pin_host_memory, plan_device, probe_machine
from webui.worker.errors import ModelLoadError
from webui.worker.models import (
    FAMILY_DEFAULTS,
    LoadedModel,
    ModelDefaults,
    load_model,
    resolve_source,
    set_lora_scale,
    wrap_pipeline,
)

logger = logging.getLogger(__name__)



class PipelineBase:
    """What every servable pipeline shares: its name, family, defaults, and how a request becomes parameters.

    ``PortraitPipeline`` (a real diffusers model) and ``webui.worker.standin.StandinPipeline``
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


class PortraitPipeline(PipelineBase):
    """A loaded model (text-to-image + image-to-image over shared components) and its device plan.

    ``generate`` runs one job at a time (LoRA scale and VAE tiling are set per job on the
    shared components); the worker serialises jobs.
    """

    def __init__(self, model: LoadedModel, plan: DevicePlan, model_name: str, defaults: ModelDefaults, max_side: int):
        super().__init__(model_name, model.family, defaults, max_side)
        self.model = model
        self.plan = plan
        self.placed = False
        """Whether the device plan has been applied (the weights are where they run)."""

    @classmethod
    def load(cls, settings: WorkerSettings, place: bool = True) -> PortraitPipeline:
        """Resolve ``settings.model``/``settings.lora``, load them and apply the device plan
        (``place=False``: leave the weights in host memory until ``place``).

        Raises ``ModelLoadError`` (one-line message) when anything is missing or wrong.
        """
        started = time.perf_counter()
        try:
            plan = plan_device(settings, probe_machine())
        except DeviceError as exc:
            raise ModelLoadError(str(exc)) from None
        source = resolve_source(settings.model, settings.lora, settings.cache_dir)
        model = load_model(source, plan.dtype)
        pipeline = cls(model, plan, settings.model, source.defaults or FAMILY_DEFAULTS[model.family], settings.max_side)
        if place:
            pipeline.place()
        logger.info("model %s loaded in %.1fs (%s)", settings.model, time.perf_counter() - started,
                    f"on {plan.device}" if place else "in host memory")
        return pipeline

    def place(self) -> None:
        """Apply the device plan once: the weights go to the device, the speed-ups are switched on."""
        if not self.placed:
            started = time.perf_counter()
            apply_plan(self.model.text2img, self.plan)
            self.placed = True
            logger.info("model on %s in %.2fs", self.plan.device, time.perf_counter() - started)

    def pin_host_memory(self) -> int:
        """Before ``place``: page-lock the weights that will go to a GPU (a warm standby's, while it waits)."""
        return 0 if self.placed else pin_host_memory(self.model.text2img, self.plan)

    @classmethod
    def from_pipeline(cls, text2img, plan: DevicePlan, model_name: str, max_side: int = MAX_SIDE) -> PortraitPipeline:
        """Serve an already built text-to-image pipeline (no LoRA) with ``plan``, as ``load`` serves a loaded one.

        For pipelines built in memory, e.g. the architecture twin that ``bench.gpu`` measures;
        ``text2img`` must already be in ``plan.dtype``. Defaults are its family's.
        """
        model = wrap_pipeline(text2img)
        pipeline = cls(model, plan, model_name, FAMILY_DEFAULTS[model.family], max_side)
        pipeline.place()
        return pipeline

    def describe(self) -> dict:
        """What is loaded and how it runs, as JSON-able values (for ``/readyz``)."""
        return {
            "model": self.model_name,
            "family": self.family.value,
            "pipeline": type(self.model.text2img).__name__,
            "lora": self.model.lora,
            "defaults": dataclasses.asdict(self.defaults),
            **self.plan.as_dict(),
        }

    def generate(
        self,
        params: EffectiveParams,
        init_image: Image.Image | None = None,
        on_step: StepCallback | None = None,
    ) -> list[Image.Image]:
        """Run one job; ``on_step(step, total)`` is called after each denoising step.

        An exception raised by ``on_step`` stops the job and propagates to the caller.
        Retouch (``params.mode == "retouch"``) needs ``init_image``; it is cropped to the
        requested aspect and resized to ``params.width x params.height`` first.
        """
        if params.mode == "retouch":
            if init_image is None:
                raise ValueError("init_image: a retouch job needs an input image")
            pipe = self.model.img2img
            image_kwargs = {
                "image": ImageOps.fit(
                    init_image.convert("RGB"), (params.width, params.height), Image.Resampling.LANCZOS
                ),
                "strength": params.strength,
            }
        else:
            pipe = self.model.text2img
            image_kwargs = {}

        if self.model.lora:
            set_lora_scale(pipe, params.lora_scale)
        if self.plan.tile_vae(params.width, params.height):
            pipe.vae.enable_tiling()
        else:
            pipe.vae.disable_tiling()

        def step_end(pipeline, index: int, timestep, callback_kwargs: dict) -> dict:
            if on_step is not None:
                on_step(index + 1, pipeline.num_timesteps)
            return {}

        generators = [torch.Generator("cpu").manual_seed(params.seed + i) for i in range(params.num_images)]
        with torch.inference_mode():
            result = pipe(
                prompt=params.prompt,
                negative_prompt=params.negative_prompt or None,
                height=params.height,
                width=params.width,
                num_inference_steps=params.steps,
                guidance_scale=params.guidance,
                num_images_per_prompt=params.num_images,
                generator=generators,
                callback_on_step_end=step_end,
                **image_kwargs,
            )
        return list(result.images)


def load_pipeline(settings: WorkerSettings, place: bool = True) -> PipelineBase:
    """What a worker serves for ``settings.model``: ``standin:SECONDS`` (benchmarks only) or a real model;
    ``place=False`` leaves a real model's weights in host memory (a warm standby's, until ``place``)."""
    from webui.worker.standin import StandinPipeline, standin_seconds

    seconds = standin_seconds(settings.model)
    if seconds is not None:
        return StandinPipeline.for_settings(settings, seconds)
    return PortraitPipeline.load(settings, place=place)
