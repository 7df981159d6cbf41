"""What ``--model`` and ``--lora`` name, checked before torch and diffusers are imported (seconds of a start).

``resolve_source`` turns them into a ``ModelSource`` (what to load, with which defaults; for the demo
model, its place in the cache: ``webui.worker.pipelines.loader`` builds it there); ``detect_family``
reads ``model_index.json`` to tell Z-Image from SDXL, so a directory that does not exist, or a model of
another kind, fails a worker at once with one line. ``webui.worker.pipelines.models`` loads what they
found. No torch, no diffusers here.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import hf_hub_download

from webui.schema import ModelFamily
from webui.worker.errors import ModelLoadError, one_line
from webui.worker.pipelines.base import ModelDefaults
from webui.worker.pipelines.demo import LORA_SUBDIR, demo_dir

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

FAMILY_DEFAULTS = {
    # Z-Image-Turbo is distilled: 8 steps, no classifier-free guidance.
    ModelFamily.ZIMAGE: ModelDefaults(steps=8, guidance=0.0, width=1024, height=1024),
    ModelFamily.SDXL: ModelDefaults(steps=30, guidance=7.5, width=1024, height=1024),
}


@dataclass(frozen=True)
class Preset:
    """A named model: where its weights live, its own LoRA and its defaults."""

    model: str
    lora: str | None = None
    defaults: ModelDefaults | None = None
    """``None``: the family's defaults."""


DEMO = "demo"
PRESETS = {
    DEMO: Preset(model=DEMO, lora=DEMO, defaults=ModelDefaults(steps=8, guidance=0.0, width=512, height=512)),
    "awportrait-z": Preset(model="Tongyi-MAI/Z-Image-Turbo", lora="Shakker-Labs/AWPortrait-Z"),
    "sdxl": Preset(model="stabilityai/stable-diffusion-xl-base-1.0"),
}
"""``--model`` names with a meaning of their own; ``demo``'s model and LoRA are built locally."""


PIPELINE_CLASSES = {
    ModelFamily.ZIMAGE: ("ZImagePipeline", "ZImageImg2ImgPipeline"),
    ModelFamily.SDXL: ("StableDiffusionXLPipeline", "StableDiffusionXLImg2ImgPipeline"),
}
"""Family -> the diffusers pipeline classes (text-to-image, image-to-image) a ``model_index.json`` may name."""


@dataclass(frozen=True)
class ModelSource:
    """A resolved ``--model``/``--lora`` pair."""

    name: str
    """What the user asked for (``demo``, a preset, a hub id or a path)."""
    location: str
    """A local directory or a hub id, as given to ``from_pretrained``."""
    is_local: bool
    lora: str | None
    """A local file/directory or a hub id, or ``None`` for no LoRA."""
    defaults: ModelDefaults | None
    demo: bool = False
    """The built-in demo model (``location`` is in the cache; ``loader.ensure_demo_model`` builds it)."""


def resolve_source(model: str, lora: str, cache_dir: Path) -> ModelSource:
    """Turn ``--model`` and ``--lora`` into a ``ModelSource`` (``demo``: its place in ``cache_dir``, built or not).

    ``lora``: ``auto`` (the preset's own LoRA, none for other models), ``none``, or a path
    or hub id.
    """
    preset = PRESETS.get(model)
    location = preset.model if preset else model
    demo = location == DEMO
    if demo:
        directory = demo_dir(cache_dir)
        location = str(directory)
        preset = Preset(model=location, lora=str(directory / LORA_SUBDIR), defaults=preset.defaults)
    is_local = _is_local(location)
    if is_local:
        location = str(Path(location).expanduser().resolve())

    if lora == "auto":
        lora_location = preset.lora if preset else None
    elif lora == "none":
        lora_location = None
    else:
        lora_location = str(Path(lora).expanduser().resolve()) if _is_local(lora) else lora
    return ModelSource(
        name=model, location=location, is_local=is_local, lora=lora_location,
        defaults=preset.defaults if preset else None, demo=demo,
    )


def _is_local(location: str) -> bool:
    """A path (existing, or not shaped like ``owner/name``) rather than a hub id."""
    return Path(location).expanduser().exists() or not _HUB_ID.match(location)


def detect_family(source: ModelSource) -> ModelFamily:
    """Read the pipeline class from ``model_index.json`` and map it to a ``ModelFamily``."""
    index_path = _model_index_path(source)
    try:
        class_name = json.loads(index_path.read_text())["_class_name"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelLoadError(f"model {source.name!r}: {index_path} is not a valid model_index.json ({exc})") from None
    for family, names in PIPELINE_CLASSES.items():
        if class_name in names:
            return family
    supported = ", ".join(names[0] for names in PIPELINE_CLASSES.values())
    raise ModelLoadError(
        f"model {source.name!r}: pipeline class {class_name!r} is not supported (supported: {supported})"
    )


def _model_index_path(source: ModelSource) -> Path:
    """The local ``model_index.json`` of ``source`` (downloaded alone for a hub id)."""
    if source.is_local:
        directory = Path(source.location)
        if not directory.is_dir():
            raise ModelLoadError(f"model {source.name!r}: directory {directory} does not exist")
        return directory / "model_index.json"
    try:
        return Path(hf_hub_download(source.location, "model_index.json"))
    except Exception as exc:  # offline, unknown repo, gated, network error, ...
        raise ModelLoadError(
            f"model {source.name!r}: cannot get model_index.json of {source.location!r} from the Hugging Face hub "
            f"({one_line(exc)})"
        ) from None
