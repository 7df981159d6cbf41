"""An image's recipe: everything that made it, written into its PNG as text chunks, and read back.

Every PNG a worker returns carries its ``Recipe`` (one ``iTXt`` chunk per field: ``prompt``, ``seed``, ...,
``loras`` as JSON) and says it is AI-generated: ``AI-generated: true`` and the IPTC digital source type
``trainedAlgorithmicMedia``. ``read_recipe`` reads a PNG's recipe back (the jobs API's ``POST /v1/recipes``,
the studio page's "restore from a PNG"), and ``remake_fields`` turns it into the one-image job that makes the
same image again: on the same hardware, the same pixels.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from typing import Literal, get_args, get_origin

from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, Field, ValidationError

from webui.schema import MAX_SEED, EffectiveParams

RECIPE_VERSION = 1
AI_GENERATED_KEY = "AI-generated"
DIGITAL_SOURCE_TYPE_KEY = "DigitalSourceType"
TRAINED_ALGORITHMIC_MEDIA = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
"""IPTC's digital source type for media made by a trained model (what C2PA and IPTC readers look for)."""
SOFTWARE_KEY = "Software"
SOFTWARE = "portrait-ha"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class RecipeError(ValueError):
    """A file whose recipe cannot be read; the message says why, for a person."""


class LoraRecord(BaseModel):
    """A LoRA a model carries: where it came from and the SHA-256 of its weights file."""

    name: str
    sha256: str | None = None
    scale: float = 1.0


class Provenance(BaseModel):
    """What a loaded pipeline says of itself, once per load: model, weights hashes, scheduler, versions."""

    model: str
    model_sha256: str | None = Field(None, description="SHA-256 over the model's weight files (None: no files).")
    loras: list[LoraRecord] = Field(default_factory=list)
    scheduler: str | None = None
    device: str | None = Field(None, description="Where it ran: ``cpu``, or the GPU's name.")
    dtype: str | None = None
    diffusers_version: str | None = None
    torch_version: str | None = None


class Recipe(Provenance):
    """Everything that made one image; ``seed`` is the image's own (image ``batch_index`` of its batch)."""

    recipe_version: int = RECIPE_VERSION
    prompt: str
    negative_prompt: str = ""
    seed: int = Field(ge=0, le=MAX_SEED)
    steps: int
    guidance: float
    width: int
    height: int
    lora_scale: float = 1.0
    mode: Literal["text2img", "retouch"] = "text2img"
    strength: float | None = None
    input_sha256: str | None = Field(None, description="Retouch: SHA-256 of the photo the worker was given.")
    batch_index: int = Field(0, description="Where the image was in its batch (0 = first).")
    batch_size: int = 1

    @classmethod
    def of(cls, params: EffectiveParams, provenance: Provenance, seed: int, index: int,
           input_sha256: str | None) -> Recipe:
        """Image ``index`` of a job that ran with ``params`` (its own ``seed``) on a pipeline of ``provenance``."""
        loras = [lora.model_copy(update={"scale": params.lora_scale}) for lora in provenance.loras]
        fields = params.model_dump(exclude={"seed", "num_images"})
        return cls(**provenance.model_dump(exclude={"loras"}), **fields, loras=loras, seed=seed,
                   input_sha256=input_sha256, batch_index=index, batch_size=params.num_images)


def png_text(recipe: Recipe) -> dict[str, str]:
    """The PNG text chunks of ``recipe``: the AI-generated markers, then one per field (none for a missing value)."""
    chunks = {AI_GENERATED_KEY: "true", DIGITAL_SOURCE_TYPE_KEY: TRAINED_ALGORITHMIC_MEDIA, SOFTWARE_KEY: SOFTWARE}
    for name, value in recipe.model_dump(mode="json", exclude_none=True).items():
        chunks[name] = value if isinstance(value, str) else json.dumps(value)
    return chunks


def recipe_from_text(text: Mapping[str, str]) -> Recipe:
    """A recipe from PNG text chunks (``png_text``'s); ``RecipeError`` when they hold none or a broken one."""
    if "recipe_version" not in text:
        raise RecipeError("this PNG carries no portrait-ha recipe (it was not made here, or an editor removed it)")
    fields = {}
    for name, info in Recipe.model_fields.items():
        if name in text:
            fields[name] = text[name] if _is_text(info.annotation) else _json(text[name])
    try:
        return Recipe.model_validate(fields)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise RecipeError(f"the PNG's recipe is incomplete or damaged ({problems})") from None


def _is_text(annotation: object) -> bool:
    """Whether a field's chunk is its value as is (``str``, ``str | None``, a ``Literal``), not JSON."""
    return annotation is str or str in get_args(annotation) or get_origin(annotation) is Literal


def _json(value: str) -> object:
    try:
        return json.loads(value)
    except ValueError:
        return value  # validation says what is wrong with it


def read_recipe(png: bytes, max_bytes: int) -> Recipe:
    """The recipe in a PNG file's bytes; ``RecipeError`` for an oversize file, another format or no recipe."""
    if len(png) > max_bytes:
        raise RecipeError(f"the file has {len(png)} bytes, more than the {max_bytes}-byte limit")
    if not png.startswith(PNG_SIGNATURE):
        raise RecipeError("not a PNG file: a recipe travels only in the PNG files the studio makes")
    try:
        with Image.open(io.BytesIO(png), formats=["PNG"]) as image:
            text = dict(getattr(image, "text", {}))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        raise RecipeError("the PNG is truncated or corrupt") from None
    return recipe_from_text(text)


def remake_fields(recipe: Recipe) -> dict[str, object]:
    """The one-image job (``GenerationRequest`` fields) that makes the recipe's image again.

    A retouch needs its photo again (``init_image``; ``input_sha256`` tells whether it is the same one).
    """
    fields: dict[str, object] = recipe.model_dump(include={
        "prompt", "negative_prompt", "seed", "steps", "guidance", "width", "height", "lora_scale"})
    if recipe.mode == "retouch" and recipe.strength is not None:
        fields["strength"] = recipe.strength
    return {**fields, "num_images": 1}
