"""Model loading: one code path for the demo model, presets, hub ids and dirs.

``load_model`` loads what ``webui.worker.pipelines.sources.resolve_source`` found: the text-to-image pipeline
with ``from_pretrained``, the LoRA attached, and the image-to-image pipeline derived from the same
components with ``from_pipe``. Every failure surfaces as ``ModelLoadError`` with a one-line message.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import (
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLPipeline,
    ZImageImg2ImgPipeline,
    ZImagePipeline,
)
from diffusers.loaders.lora_base import LORA_WEIGHT_NAME_SAFE
from diffusers.pipelines.pipeline_utils import DiffusionPipeline
from huggingface_hub import snapshot_download
from safetensors import safe_open

from webui.schema import ModelFamily
from webui.worker.errors import ModelLoadError, one_line
from webui.worker.pipelines.sources import ModelSource, detect_family

logger = logging.getLogger(__name__)

LORA_ADAPTER = "portrait"
"""Adapter name the LoRA is loaded under."""


@dataclass(frozen=True)
class FamilyPipelines:
    """The diffusers classes of one model family."""

    text2img: type[DiffusionPipeline]
    img2img: type[DiffusionPipeline]


PIPELINES = {
    ModelFamily.ZIMAGE: FamilyPipelines(ZImagePipeline, ZImageImg2ImgPipeline),
    ModelFamily.SDXL: FamilyPipelines(StableDiffusionXLPipeline, StableDiffusionXLImg2ImgPipeline),
}
"""The classes ``webui.worker.pipelines.sources.PIPELINE_CLASSES`` names."""


@dataclass
class LoadedModel:
    """The text-to-image and image-to-image pipelines over one set of components."""

    family: ModelFamily
    text2img: DiffusionPipeline
    img2img: DiffusionPipeline
    lora: str | None
    """Where the LoRA came from, if one is loaded (as adapter ``LORA_ADAPTER``)."""


def load_model(source: ModelSource, dtype: torch.dtype, family: ModelFamily | None = None) -> LoadedModel:
    """Load ``source`` (on the CPU, in ``dtype``) with its LoRA; raise ``ModelLoadError`` on any failure.

    ``family``: what ``detect_family`` said of ``source`` already (else it reads ``model_index.json``)."""
    family = family or detect_family(source)
    classes = PIPELINES[family]
    logger.info("loading %s (%s) from %s", source.name, family.value, source.location)
    try:
        text2img = classes.text2img.from_pretrained(source.location, dtype=dtype)
    except Exception as exc:
        raise ModelLoadError(f"model {source.name!r}: cannot load {source.location} ({one_line(exc)})") from None
    if source.lora:
        load_lora(text2img, source.lora)
    return wrap_pipeline(text2img, lora=source.lora)


def wrap_pipeline(text2img: DiffusionPipeline, lora: str | None = None) -> LoadedModel:
    """A ``LoadedModel`` over an already built text-to-image pipeline (img2img shares its components).

    ``load_model`` ends here; ``bench.gpu`` wraps the architecture twin with it. ``lora``: where
    the LoRA that ``text2img`` already carries came from, if any.
    """
    family = next((family for family, classes in PIPELINES.items() if isinstance(text2img, classes.text2img)), None)
    if family is None:
        raise ModelLoadError(f"pipeline class {type(text2img).__name__!r} is not a supported text-to-image pipeline")
    # from_pipe casts every shared component to its dtype argument, float32 when none is given: without
    # it a bfloat16 or float16 model silently ran in float32 (twice the memory, ~10x slower on an H200).
    img2img = PIPELINES[family].img2img.from_pipe(text2img, dtype=text2img.dtype)
    for pipe in (text2img, img2img):
        pipe.set_progress_bar_config(disable=True)
    return LoadedModel(family=family, text2img=text2img, img2img=img2img, lora=lora)


def load_lora(pipe: DiffusionPipeline, lora: str) -> None:
    """Load LoRA weights (a ``.safetensors`` file, or a directory or hub id holding one) as ``LORA_ADAPTER``.

    The file may use diffusers' key layout or a ComfyUI (``diffusion_model.…``) or kohya (``lora_unet_…``)
    one: diffusers converts those on load.
    """
    weight_file = lora_weight_file(lora)
    logger.info("loading LoRA %s from %s", lora, weight_file)
    try:
        pipe.load_lora_weights(str(weight_file.parent), weight_name=weight_file.name, adapter_name=LORA_ADAPTER)
    except Exception as exc:
        raise ModelLoadError(f"lora {lora!r}: cannot load ({one_line(exc)})") from None
    in_file, loaded = lora_weight_count(weight_file), loaded_lora_weight_count(pipe)
    if loaded < in_file:  # diffusers skips tensors for modules the model lacks, silently
        logger.warning("lora %s: %d of its %d LoRA weight tensors match no module of this model and were ignored "
                       "(a LoRA for another base model, or a layout diffusers does not convert)",
                       lora, in_file - loaded, in_file)


def lora_weight_count(weight_file: Path) -> int:
    """LoRA weight tensors in a file, whatever its layout (``alpha`` scalars are not weights)."""
    with safe_open(str(weight_file), framework="pt") as handle:
        return sum(1 for key in handle.keys() if not key.endswith(".alpha"))


def loaded_lora_weight_count(pipe: DiffusionPipeline) -> int:
    """LoRA weight tensors the pipeline's models hold for ``LORA_ADAPTER``."""
    marker = f".{LORA_ADAPTER}."
    return sum(
        1 for component in pipe.components.values() if isinstance(component, torch.nn.Module)
        for name, _ in component.named_parameters() if "lora_" in name and marker in f"{name}."
    )


def lora_weight_file(lora: str) -> Path:
    """The weights file of ``lora``: the file itself, or the one top-level ``.safetensors`` of a directory or hub repo.

    A hub id (``owner/name``, not an absolute path) is fetched with ``snapshot_download``, its top-level
    ``.safetensors`` files only; offline (``HF_HUB_OFFLINE=1``) it comes from the local Hugging Face cache.
    Among several files diffusers' own ``pytorch_lora_weights.safetensors`` wins; other choices are an error.
    """
    path = Path(lora)
    if path.is_file():
        return path
    if path.is_absolute() and not path.is_dir():
        raise ModelLoadError(f"lora: {lora} does not exist")
    directory = path if path.is_dir() else _hub_snapshot(lora)
    files = sorted(directory.glob("*.safetensors"))
    preferred = directory / LORA_WEIGHT_NAME_SAFE
    if preferred in files:
        return preferred
    if len(files) == 1:
        return files[0]
    found = ", ".join(file.name for file in files) or "none"
    raise ModelLoadError(f"lora {lora!r}: expected one .safetensors file in {directory}, found {found}")


def _hub_snapshot(repo_id: str) -> Path:
    """The local snapshot of hub repo ``repo_id`` with its top-level ``.safetensors`` files."""
    try:
        return Path(snapshot_download(repo_id, allow_patterns=["*.safetensors"], ignore_patterns=["*/*"]))
    except Exception as exc:  # offline and not cached, unknown repo, gated, network error, ...
        raise ModelLoadError(f"lora {repo_id!r}: cannot get it from the Hugging Face hub ({one_line(exc)})") from None


def set_lora_scale(pipe: DiffusionPipeline, scale: float) -> None:
    """Set the LoRA strength for the next generation (0 switches the LoRA off entirely)."""
    if scale == 0:
        pipe.disable_lora()
    else:
        pipe.enable_lora()
        pipe.set_adapters([LORA_ADAPTER], adapter_weights=[scale])
