"""The worker's diffusion pipeline: load once, then generate text-to-image or retouch jobs.

```python
pipe = load_pipeline(settings)  # webui.worker.pipelines.loader: a PortraitPipeline for a real model
params = pipe.effective_params(request, seed=1234)
images = pipe.generate(params, on_step=lambda step, total: print(step, total))
```

Determinism: image ``i`` of a request is its own one-image run, from its own CPU ``torch.Generator``
seeded with ``seed + i`` (``webui.schema.image_seeds``): the same seed and parameters give the same
images on any run, and image ``i`` of a batch has the same pixels as a one-image request with
``seed + i``, whatever the batch size. (A batched run does not: batched kernels round differently,
by a level here and there.) Every image's recipe (``provenance``: model and LoRA hashes, scheduler,
versions) is computed once, when the model loads.

What a worker serves is chosen by ``webui.worker.pipelines.loader.load_pipeline``: this, or the
benchmarks' fixed-latency stand-in (which imports neither torch nor diffusers).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import diffusers
import torch
from PIL import Image, ImageOps

from webui.contract import MAX_SIDE
from webui.recipe import LoraRecord, Provenance
from webui.schema import EffectiveParams, ModelFamily, StepCallback, image_seeds
from webui.settings import WorkerSettings
from webui.worker.errors import one_line
from webui.worker.pipelines.base import ModelDefaults, PipelineBase
from webui.worker.pipelines.device import DevicePlan, apply_plan, pin_host_memory
from webui.worker.pipelines.models import LoadedModel, load_model, lora_weight_file, set_lora_scale, wrap_pipeline
from webui.worker.pipelines.sources import FAMILY_DEFAULTS, ModelSource
from webui.worker.pipelines.weights_hash import WeightHashes

logger = logging.getLogger(__name__)


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
        plan_values = plan.as_dict()
        self._provenance = Provenance(
            model=model_name, scheduler=type(model.text2img.scheduler).__name__,
            device=plan_values.get("gpu_name") or plan_values["device"], dtype=plan_values["dtype"],
            diffusers_version=diffusers.__version__, torch_version=torch.__version__)

    @classmethod
    def load(cls, settings: WorkerSettings, source: ModelSource, family: ModelFamily, plan: DevicePlan,
             place: bool = True) -> PortraitPipeline:
        """Load ``source`` (a model of ``family``, both checked by ``loader.load_pipeline``) for ``settings`` in
        ``plan``'s dtype, then apply ``plan`` (``place=False``: leave the weights in host memory until ``place``).

        Raises ``ModelLoadError`` (one-line message) when anything is missing or wrong.
        """
        started = time.perf_counter()
        model = load_model(source, plan.dtype, family)
        pipeline = cls(model, plan, settings.model, source.defaults or FAMILY_DEFAULTS[model.family], settings.max_side)
        pipeline.hash_weights(source, WeightHashes(settings.cache_dir))
        if place:
            pipeline.place()
        logger.info("model %s loaded in %.1fs (%s)", settings.model, time.perf_counter() - started,
                    f"on {plan.device}" if place else "in host memory")
        return pipeline

    def hash_weights(self, source: ModelSource, hashes: WeightHashes) -> None:
        """Hash the model's and the LoRA's weight files for every image's recipe (once per load)."""
        from huggingface_hub import snapshot_download  # a hub model's files: in the local cache once loaded

        model_sha256, lora_sha256 = None, None
        try:
            local = source.location if source.is_local else snapshot_download(source.location, local_files_only=True)
            model_sha256 = hashes.directory(Path(local))
            lora_sha256 = hashes.file(lora_weight_file(source.lora)) if source.lora else None
        except Exception as exc:  # noqa: BLE001 - a recipe without hashes beats a worker that cannot serve
            logger.warning("cannot hash the weights of %s (%s); recipes name them without hashes",
                           source.name, one_line(exc))
        # A local LoRA by its name only (no server path in a published file); its hash says which it is.
        name = Path(source.lora).name if source.lora and Path(source.lora).is_absolute() else source.lora
        loras = [LoraRecord(name=name, sha256=lora_sha256)] if source.lora else []
        self._provenance = self._provenance.model_copy(update={"model_sha256": model_sha256, "loras": loras})

    def provenance(self) -> Provenance:
        """Model, weights hashes, scheduler and versions, as every image's recipe gives them."""
        return self._provenance

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
        self.check_inputs(params, init_image)
        if params.mode == "retouch":
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

        done = 0  # steps of the images before this one

        def step_end(pipeline, index: int, timestep, callback_kwargs: dict) -> dict:
            if on_step is not None:
                on_step(done + index + 1, pipeline.num_timesteps * params.num_images)
            return {}

        images = []
        for seed in image_seeds(params.seed, params.num_images):  # one run per image: see the module
            with torch.inference_mode():
                result = pipe(
                    prompt=params.prompt,
                    negative_prompt=params.negative_prompt or None,
                    height=params.height,
                    width=params.width,
                    num_inference_steps=params.steps,
                    guidance_scale=params.guidance,
                    num_images_per_prompt=1,
                    generator=torch.Generator("cpu").manual_seed(seed),
                    callback_on_step_end=step_end,
                    **image_kwargs,
                )
            images.extend(result.images)
            done += pipe.num_timesteps
        return images
