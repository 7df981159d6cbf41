"""The request and response schema shared by the worker, the web front and the REST API.

One pydantic model validates every generation request, whichever way it arrives (JSON
body, query string, Gradio UI). Limits that depend on the loaded model or on the worker's
settings (size multiple, image cap, upload cap) come in through the validation context:

    GenerationRequest.model_validate(data, context={"limits": limits})
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, model_validator

from webui.contract import (
    MAX_IMAGES,
    MAX_MEGAPIXEL_STEPS,
    MAX_PROMPT_CHARS,
    MAX_SIDE,
    MAX_STEPS,
    MAX_UPLOAD_BYTES,
    MAX_UPLOAD_PIXELS,
)

MAX_SEED = 2**32 - 1
"""Seeds are unsigned 32-bit integers, as most diffusion tools use."""


def image_seeds(seed: int, count: int) -> list[int]:
    """Each image's own seed in a batch that starts at ``seed``: ``seed + i``, wrapping within ``MAX_SEED``.

    Image ``i`` of a batch is the one-image job with seed ``image_seeds(seed, count)[i]``, whatever ``count`` is.
    """
    return [(seed + index) % (MAX_SEED + 1) for index in range(count)]


def denoising_steps(steps: int, strength: float | None) -> int:
    """Steps a job runs per image: all of them, or for a retouch at ``strength`` the last part (diffusers'
    ``get_timesteps``: 8 steps at strength 0.6 run 5)."""
    if strength is None:
        return steps
    return steps - int(max(steps - steps * strength, 0))


StepCallback = Callable[[int, int], None]
"""Called with (step, total) as a job starts (step 0) and after each denoising step."""


class ModelFamily(str, Enum):
    """The diffusion model families a worker can serve."""

    ZIMAGE = "z-image"
    SDXL = "sdxl"

    @property
    def size_multiple(self) -> int:
        """Width and height must be multiples of this."""
        return 16 if self is ModelFamily.ZIMAGE else 8


class Limits(BaseModel):
    """What one worker accepts; built from its settings and its model's family."""

    family: ModelFamily = ModelFamily.ZIMAGE
    max_images: int = MAX_IMAGES
    max_side: int = MAX_SIDE
    max_steps: int = MAX_STEPS
    max_prompt_chars: int = MAX_PROMPT_CHARS
    max_upload_bytes: int = MAX_UPLOAD_BYTES
    max_upload_pixels: int = MAX_UPLOAD_PIXELS
    max_megapixel_steps: float = MAX_MEGAPIXEL_STEPS
    """Most work per job: width x height / 1,000,000 x steps x images (``webui.worker.job_cost``)."""


class WorkerInfo(BaseModel):
    """What a worker serves (``GET /info``): its model, its defaults and its limits.

    The studio page is built from it (slider steps, maxima, defaults), so what the page offers
    is what the worker accepts.
    """

    node: str
    model: str
    lora: str | None = None
    defaults: dict[str, float | int] = Field(description="steps, guidance, width, height of a job that omits them.")
    limits: Limits
    configuration: dict[str, dict[str, str | bool]] = Field(
        default_factory=dict, description="How the model runs (dtype, compile, fp8, attention): each choice's "
        "value and the reason it was made; empty for the stand-in.")

    @property
    def size_multiple(self) -> int:
        """Width and height must be multiples of this."""
        return self.limits.family.size_multiple


class GenerationRequest(BaseModel):
    """One text-to-image or retouch (image-to-image) job.

    ``None`` means "the model's default" for steps, guidance and size, and "random" for seed.
    """

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, description="What to draw.")
    negative_prompt: str = Field("", description="What to avoid (ignored by models without CFG).")
    steps: int | None = Field(None, ge=1, description="Denoising steps.")
    guidance: float | None = Field(None, ge=0.0, le=30.0, description="Classifier-free guidance scale.")
    width: int | None = Field(None, ge=64, description="Image width in pixels.")
    height: int | None = Field(None, ge=64, description="Image height in pixels.")
    seed: int | None = Field(None, ge=0, le=MAX_SEED, description="Random seed; random when absent.")
    lora_scale: float = Field(1.0, ge=0.0, le=2.0, description="LoRA strength; 0 disables the LoRA.")
    num_images: int = Field(1, ge=1, description="Images to generate.")
    init_image: str | None = Field(None, description="Retouch: base64-encoded PNG/JPEG/WebP photo.")
    strength: float = Field(0.6, gt=0.0, le=1.0, description="Retouch: how much the photo may change.")

    @model_validator(mode="after")
    def _check_limits(self, info: ValidationInfo) -> GenerationRequest:
        limits: Limits = (info.context or {}).get("limits") or Limits()
        problems = []
        if not self.prompt.strip():
            problems.append("prompt: must contain some text, not only spaces")
        if len(self.prompt) > limits.max_prompt_chars:
            problems.append(f"prompt: at most {limits.max_prompt_chars} characters")
        if len(self.negative_prompt) > limits.max_prompt_chars:
            problems.append(f"negative_prompt: at most {limits.max_prompt_chars} characters")
        if self.steps is not None and self.steps > limits.max_steps:
            problems.append(f"steps: must be between 1 and {limits.max_steps}")
        if self.num_images > limits.max_images:
            problems.append(f"num_images: must be between 1 and {limits.max_images}")
        multiple = limits.family.size_multiple
        for name in ("width", "height"):
            value = getattr(self, name)
            if value is None:
                continue
            if value > limits.max_side:
                problems.append(f"{name}: must be between 64 and {limits.max_side}")
            elif value % multiple:
                problems.append(f"{name}: must be a multiple of {multiple} for {limits.family.value} models")
        if self.init_image is not None and len(self.init_image) * 3 // 4 > limits.max_upload_bytes:
            problems.append(f"init_image: larger than {limits.max_upload_bytes} bytes")
        if problems:
            raise ValueError("; ".join(problems))
        return self


class EffectiveParams(BaseModel):
    """The parameters a generation actually ran with (defaults filled in)."""

    prompt: str
    negative_prompt: str
    steps: int
    guidance: float
    width: int
    height: int
    seed: int
    lora_scale: float
    num_images: int
    mode: Literal["text2img", "retouch"]
    strength: float | None = None


class Timings(BaseModel):
    """Where the time of one request went, in milliseconds."""

    queue_ms: float
    generate_ms: float
    total_ms: float


class GenerationResult(BaseModel):
    """A finished generation, as ``POST /generate`` returns it."""

    images: list[str] = Field(description="Base64-encoded PNG images.")
    image: str | None = Field(
        None, description="The first image again, for older scripts; absent when the job was sent with "
        "`Prefer: return=minimal`.",
    )
    seed: int
    seeds: list[int] = Field(default_factory=list, description="Each image's own seed (``seed + i``): image ``i`` "
                             "made again alone, as a one-image job with that seed, has the same pixels.")
    params: EffectiveParams
    worker_id: str
    model: str
    timings: Timings


class ErrorBody(BaseModel):
    """Every error the HTTP API returns has this shape (never a traceback)."""

    error: str = Field(description="Short machine-readable kind: invalid_request, out_of_memory, busy, ...")
    detail: str = Field(description="A sentence for a person.")
    fields: list[dict[str, Any]] = Field(default_factory=list, description="Per-field problems, for 422.")


# Streaming (POST /generate/stream): newline-delimited JSON, one event a line.
class ProgressEvent(BaseModel):
    """Sent once when the job starts (step 0) and after each denoising step."""

    event: Literal["progress"] = "progress"
    step: int
    total: int
    worker_id: str


class ResultEvent(BaseModel):
    """The last line of a successful stream."""

    event: Literal["result"] = "result"
    result: GenerationResult


class ErrorEvent(BaseModel):
    """The last line of a failed stream; ``status`` is the HTTP status it would have had."""

    event: Literal["error"] = "error"
    status: int
    error: ErrorBody
