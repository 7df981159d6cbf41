"""The studio page: the Gradio Blocks layout, its handlers and the ``generate``/``retouch`` API.

``build_studio(studio, config, examples)`` lays out the page; ``Studio`` runs jobs on the
workers through a ``WorkerClient`` and turns results into gallery images and an info dict.
Studio presets, resolutions and control defaults come from ``assets/presets.yaml``; example
prompts from ``assets/examples.yaml``.

Client API (``gradio_client.Client(url).predict(..., api_name=...)``):

- ``/generate`` (prompt, negative_prompt="", steps=None, guidance=None, width=None,
  height=None, seed=-1, lora_scale=1.0, num_images=1) -> (gallery, info)
- ``/retouch`` (image, prompt, strength=0.6, negative_prompt="", steps=None, guidance=None,
  seed=-1, lora_scale=1.0, num_images=1) -> (gallery, info)

``None`` means the loaded model's default; seed -1 means random. ``gallery`` is a list of
``{"image": path, "caption": str}``; ``info`` is the dict ``generation_info`` builds.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import logging
from pathlib import Path
from typing import Any

import gradio as gr
import yaml
from PIL import Image
from pydantic import BaseModel, Field, model_validator

from webui.images import UploadError, read_upload
from webui.photo_input import PhotoInput
from webui.presence import EventStreams, cancelled_when_client_leaves
from webui.schema import MAX_SEED, Limits
from webui.contract import MAX_IMAGES, MAX_SIDE, MAX_UPLOAD_BYTES, MAX_UPLOAD_PIXELS
from webui.worker_client import JobOutcome, WorkerClient, WorkerError, WorkerInfoCache

logger = logging.getLogger(__name__)

ASSETS = Path(__file__).resolve().parent.parent / "assets"
PRESETS_PATH = ASSETS / "presets.yaml"
EXAMPLES_PATH = ASSETS / "examples.yaml"
CSS_PATH = ASSETS / "style.css"

CUSTOM = "Custom"
RETOUCH_MAX_SIDE = 1536
"""Retouch uploads are scaled down to this many pixels on their longer side."""
JOB_CONCURRENCY_ID = "worker-jobs"
CACHE_CLEANUP = (1800, 6 * 3600)
"""Every 30 minutes, delete result images older than 6 hours (Gradio's ``delete_cache``)."""
DEMO_MODEL_NOTE = (
    "The offline **demo** model is a tiny untrained network: it draws abstract colour fields, "
    "not faces. Start the workers with `--model awportrait-z` (or another model) for portraits."
)


# ---------------------------------------------------------------------------- configuration
class ControlDefaults(BaseModel):
    """What the controls show when the page opens."""

    resolution: str
    steps: int = Field(ge=1)
    guidance: float = Field(ge=0)
    lora_scale: float = Field(ge=0, le=2)
    num_images: int = Field(ge=1)
    strength: float = Field(gt=0, le=1)


class StudioPreset(BaseModel):
    """A one-click studio set-up: a prompt template and the parameters that go with it."""

    name: str
    description: str = ""
    subject: str = Field(description="Used for {subject} when the user gives none.")
    prompt: str = Field(description="Template; {subject} is replaced by the subject.")
    negative_prompt: str = ""
    resolution: str | None = None
    steps: int | None = Field(None, ge=1)
    guidance: float | None = Field(None, ge=0)
    num_images: int | None = Field(None, ge=1)
    lora_scale: float | None = Field(None, ge=0, le=2)

    def render_prompt(self, subject: str) -> str:
        """The prompt for ``subject`` (the preset's own subject when blank)."""
        return self.prompt.replace("{subject}", subject.strip() or self.subject)


class StudioConfig(BaseModel):
    """The contents of ``assets/presets.yaml``."""

    defaults: ControlDefaults
    resolutions: dict[str, tuple[int, int]]
    presets: list[StudioPreset]

    @model_validator(mode="after")
    def _check_resolution_names(self) -> "StudioConfig":
        names = [self.defaults.resolution] + [p.resolution for p in self.presets if p.resolution]
        unknown = sorted(set(names) - set(self.resolutions))
        if unknown:
            raise ValueError(f"unknown resolution name(s) {unknown}; known: {sorted(self.resolutions)}")
        return self

    def preset(self, name: str) -> StudioPreset | None:
        """The preset called ``name``, if any."""
        return next((p for p in self.presets if p.name == name), None)

    def resolution_name(self, width: int, height: int) -> str:
        """The resolution preset of this exact size, or ``Custom``."""
        return next((n for n, size in self.resolutions.items() if tuple(size) == (width, height)), CUSTOM)


class ExamplePrompt(BaseModel):
    """One entry of ``assets/examples.yaml``."""

    prompt: str
    negative_prompt: str = ""


def load_studio_config(path: Path = PRESETS_PATH) -> StudioConfig:
    """Read and validate the studio presets file."""
    return StudioConfig.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))


def load_examples(path: Path = EXAMPLES_PATH) -> list[ExamplePrompt]:
    """Read the example prompts file."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return [ExamplePrompt.model_validate(item) for item in data["examples"]]


# ---------------------------------------------------------------------------- helpers
def save_image(data: str, cache_dir: Path, name: str) -> Path:
    """Write a base64 PNG from the worker into Gradio's cache as is (no decode, no re-encode)."""
    png = base64.b64decode(data)
    folder = cache_dir / hashlib.sha256(png).hexdigest()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(png)
    return path


def encode_photo(photo: Image.Image, max_side: int = RETOUCH_MAX_SIDE) -> str:
    """A retouch photo as base64 JPEG, scaled down to at most ``max_side`` pixels.

    The worker picks the output size from the photo's aspect ratio and the model's default
    pixel count, so only the upload's size is bounded here.
    """
    photo = photo.convert("RGB")
    photo.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    photo.save(buffer, format="JPEG", quality=95)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def generation_info(outcome: JobOutcome, web_node: str) -> dict[str, Any]:
    """The info dict shown under the result and returned by the API."""
    result, params = outcome.result, outcome.result.params
    return {
        "seed": result.seed,
        "width": params.width,
        "height": params.height,
        "steps": params.steps,
        "guidance": params.guidance,
        "lora_scale": params.lora_scale,
        "num_images": params.num_images,
        "mode": params.mode,
        "strength": params.strength,
        "prompt": params.prompt,
        "negative_prompt": params.negative_prompt,
        "model": result.model,
        "worker_id": result.worker_id,
        "web_node": web_node,
        "attempts": outcome.attempts,
        "timings": {**result.timings.model_dump(), "web_ms": round(outcome.elapsed_ms, 1)},
    }


def info_summary(info: dict[str, Any]) -> str:
    """One readable line about a generation (Markdown)."""
    seconds = info["timings"]["web_ms"] / 1000
    retried = f" · {info['attempts']} attempts" if info["attempts"] > 1 else ""
    return (
        f"**Seed** `{info['seed']}` · **{info['width']}×{info['height']}** · {info['steps']} steps · "
        f"guidance {info['guidance']:g} · worker `{info['worker_id']}` · node `{info['web_node']}` · "
        f"{seconds:.1f} s{retried}"
    )


def _optional_int(value: float | None) -> int | None:
    return None if value is None else int(value)


def job_fields(
    prompt: str, negative_prompt: str | None, steps: float | None, guidance: float | None,
    width: float | None, height: float | None, seed: int | None, lora_scale: float, num_images: float,
) -> dict[str, Any]:
    """A worker request (``GenerationRequest`` fields) from UI/API values; None = model default."""
    return {
        "prompt": prompt,
        "negative_prompt": negative_prompt or "",
        "steps": _optional_int(steps),
        "guidance": guidance,
        "width": _optional_int(width),
        "height": _optional_int(height),
        "seed": seed,
        "lora_scale": lora_scale,
        "num_images": int(num_images),
    }


def encode_photo_file(path: str, max_bytes: int, max_pixels: int, max_side: int = RETOUCH_MAX_SIDE) -> str:
    """``encode_photo`` for an uploaded file, checked (bytes, format, pixels from its header) before decoding.

    Raises ``UploadError`` (a sentence without the file's path) when the file is too large in
    bytes or pixels, not a PNG/JPEG/WebP image, too small or corrupt. Blocking: run it in a thread.
    """
    return encode_photo(read_upload(path, max_bytes, max_pixels), max_side)


def api_seed(seed: float | None) -> int | None:
    """The API's seed convention: -1 (or nothing) means random."""
    return None if seed is None or seed == -1 else int(seed)


def ui_seed(seed: float | None, randomize: bool) -> int | None:
    """The page's seed: random when the box is ticked or the seed is empty."""
    return None if randomize or seed is None else int(seed)


# ---------------------------------------------------------------------------- handlers
class Studio:
    """Runs the page's and the API's jobs on the workers."""

    def __init__(self, client: WorkerClient, worker_info: WorkerInfoCache, web_node: str, cache_dir: Path,
                 max_upload_bytes: int = MAX_UPLOAD_BYTES, max_upload_pixels: int = MAX_UPLOAD_PIXELS,
                 streams: EventStreams | None = None, max_images: int = MAX_IMAGES) -> None:
        self.client = client
        self.max_images = max_images
        """The most images this front offers (the workers' own limit may be lower)."""
        self.streams = streams or EventStreams()
        """The event streams the web front's clients have open (a job whose client is gone is cancelled)."""
        self.worker_info = worker_info
        """What the workers serve: the page's defaults, slider steps and maxima come from it."""
        self.web_node = web_node
        self.cache_dir = cache_dir
        """Where result images are written: Gradio's cache, which serves them and cleans them up."""
        self.max_upload_bytes = max_upload_bytes
        self.max_upload_pixels = max_upload_pixels

    async def retouch_fields(self, photo: str, strength: float) -> dict[str, Any]:
        """The retouch part of a worker request (the encoded photo, the strength); raises ``UploadError``."""
        try:
            encoded = await asyncio.to_thread(encode_photo_file, photo, self.max_upload_bytes, self.max_upload_pixels)
        except UploadError as exc:
            logger.info("retouch upload refused: %s", exc)
            raise
        return {"init_image": encoded, "strength": strength}

    async def run(self, fields: dict[str, Any], progress: gr.Progress) -> tuple[list[tuple[Path, str]], dict[str, Any]]:
        """Run one job with live progress; raises ``WorkerError`` with a user-facing message."""

        def on_progress(step: int, total: int, worker_id: str) -> None:
            progress((step, total), desc=f"Denoising on {worker_id}", unit="steps")

        def on_retry(attempt: int, max_attempts: int, cause: str) -> None:
            progress(0.0, desc=f"Worker lost, retrying (attempt {attempt}/{max_attempts})")

        progress(0.0, desc="Waiting for a worker")
        async with cancelled_when_client_leaves(self.streams):
            outcome = await self.client.generate(fields, on_progress=on_progress, on_retry=on_retry)
        info = generation_info(outcome, self.web_node)
        gallery = []
        for index, data in enumerate(outcome.result.images, start=1):
            path = await asyncio.to_thread(save_image, data, self.cache_dir, f"portrait-{info['seed']}-{index}.png")
            gallery.append((path, f"#{index} · seed {info['seed']}"))
        logger.info("job done: seed %s on %s in %d attempt(s)", info["seed"], info["worker_id"], info["attempts"])
        return gallery, info

    async def api_generate(
        self,
        prompt: str,
        negative_prompt: str = "",
        steps: float | None = None,
        guidance: float | None = None,
        width: float | None = None,
        height: float | None = None,
        seed: float = -1,
        lora_scale: float = 1.0,
        num_images: float = 1,
        progress: gr.Progress = gr.Progress(),
    ) -> tuple[list[tuple[Path, str]], dict[str, Any]]:
        """Generate portraits: the ``/generate`` endpoint (a stable signature for API clients).

            Client(url).predict(prompt="...", api_name="/generate") -> (gallery, info)

        Parameters (only ``prompt`` is required):
            prompt: what to draw.
            negative_prompt: what to avoid ("" = nothing).
            steps, guidance, width, height: None = the loaded model's default.
            seed: -1 = random (the seed used is in ``info``).
            lora_scale: 0 to 2 (0 disables the LoRA).
            num_images: 1 to the workers' ``max_images``.
        Returns:
            gallery: ``[{"image": path of a PNG, "caption": "#1 · seed N"}, ...]``.
            info: seed, width, height, steps, guidance, lora_scale, num_images, mode, strength,
            prompt, negative_prompt, model, worker_id, web_node, attempts and timings
            (queue_ms, generate_ms, total_ms at the worker; web_ms at this front).
        Errors reach the client as one message: the invalid field and its allowed range, an
        out-of-memory hint (lower the resolution or image count), or "No worker could finish
        the job after N attempts: <cause>".
        """
        fields = job_fields(prompt, negative_prompt, steps, guidance, width, height, api_seed(seed), lora_scale,
                            num_images)
        return await self.api_job(fields, progress, "Generation failed")

    async def api_retouch(
        self,
        image: str | None,
        prompt: str,
        strength: float = 0.6,
        negative_prompt: str = "",
        steps: float | None = None,
        guidance: float | None = None,
        seed: float = -1,
        lora_scale: float = 1.0,
        num_images: float = 1,
        progress: gr.Progress = gr.Progress(),
    ) -> tuple[list[tuple[Path, str]], dict[str, Any]]:
        """Retouch a photo: the result keeps the photo's composition (``strength`` 0-1: how much may change).

        The photo (PNG, JPEG or WebP) may have at most the front's ``max_upload_bytes`` bytes and
        ``max_upload_pixels`` pixels. The result keeps the photo's aspect ratio at about the
        model's default pixel count. Other arguments as in ``/generate``. Returns (gallery, info).
        """
        if image is None:
            raise gr.Error("image: upload a photo to retouch.", title="Retouch", print_exception=False)
        try:
            retouch = await self.retouch_fields(image, strength)
        except UploadError as exc:
            raise gr.Error(f"image: {exc}.", title="Retouch", print_exception=False) from None
        fields = job_fields(prompt, negative_prompt, steps, guidance, None, None, api_seed(seed), lora_scale,
                            num_images)
        return await self.api_job({**fields, **retouch}, progress, "Retouch failed")

    async def api_job(self, fields: dict[str, Any], progress: gr.Progress, title: str) -> tuple[Any, ...]:
        """A job started by an API client: failures become ``gr.Error`` (the client raises it)."""
        try:
            return await self.run(fields, progress)
        except WorkerError as exc:
            raise gr.Error(str(exc), title=title, print_exception=False) from None

    async def ui_job(self, fields: dict[str, Any], progress: gr.Progress) -> tuple[Any, ...]:
        """A job started from the page: (gallery, info, summary, error area, model note)."""
        try:
            gallery, info = await self.run(fields, progress)
        except WorkerError as exc:
            gr.Warning(str(exc), title="Generation failed")
            error = gr.Markdown(f"**Could not generate:** {exc}", visible=True)
            return gr.skip(), gr.skip(), gr.skip(), error, gr.skip()
        note = model_note(info["model"], self.web_node)
        return gallery, info, info_summary(info), gr.Markdown("", visible=False), note

    async def ui_generate(
        self, prompt: str, negative_prompt: str, steps: float, guidance: float, width: float, height: float,
        seed: float | None, randomize: bool, lora_scale: float, num_images: float,
        progress: gr.Progress = gr.Progress(),
    ) -> tuple[Any, ...]:
        """The Generate button."""
        fields = job_fields(prompt, negative_prompt, steps, guidance, width, height, ui_seed(seed, randomize),
                            lora_scale, num_images)
        return await self.ui_job(fields, progress)

    async def ui_retouch(
        self, photo: str | None, strength: float, prompt: str, negative_prompt: str, steps: float,
        guidance: float, seed: float | None, randomize: bool, lora_scale: float, num_images: float,
        progress: gr.Progress = gr.Progress(),
    ) -> tuple[Any, ...]:
        """The Retouch button."""
        if photo is None:
            return retouch_refused("Upload a photo to retouch first.", "upload a photo first")
        try:
            retouch = await self.retouch_fields(photo, strength)
        except UploadError as exc:
            return retouch_refused(f"The photo cannot be used: {exc}.", str(exc))
        fields = job_fields(prompt, negative_prompt, steps, guidance, None, None, ui_seed(seed, randomize),
                            lora_scale, num_images)
        return await self.ui_job({**fields, **retouch}, progress)

    async def page_load(self) -> tuple[Any, ...]:
        """On page load: (model note, steps, guidance, width, height, images) from the workers' model.

        Behind the balancer, ``/info`` reaches any worker that is up, around the job queue. The
        sliders take the model's defaults, its size multiple as their step and its limits as
        their maxima, so that the page offers only what the workers accept.
        """
        info = await self.worker_info.get()
        if isinstance(info, str):
            note = f"**No worker is ready yet** ({info}). Jobs will wait; this note updates when you reload."
            return note, *(gr.skip(),) * 5
        limits, defaults = info.limits, info.defaults
        side = dict(step=info.size_multiple, maximum=limits.max_side)
        return (
            model_note(info.model, self.web_node),
            gr.Slider(value=defaults.get("steps"), maximum=limits.max_steps),
            gr.Slider(value=defaults.get("guidance")),
            gr.Slider(**side),
            gr.Slider(**side),
            gr.Slider(maximum=min(limits.max_images, self.max_images)),
        )


def retouch_refused(warning: str, problem: str) -> tuple[Any, ...]:
    """The page's outputs when a retouch cannot start: a ``warning`` toast and ``problem`` in the error area."""
    gr.Warning(warning, title="Retouch")
    error = gr.Markdown(f"**Could not retouch:** image: {problem}.", visible=True)
    return gr.skip(), gr.skip(), gr.skip(), error, gr.skip()


def model_note(model: str | None, web_node: str) -> str:
    """Which model the workers serve (Markdown), with the demo model's caveat."""
    if model is None:
        return f"Model: **workers ready** (named after the first job) · node `{web_node}`"
    note = f"Model: **{model}** · node `{web_node}`"
    if model == "demo":
        note += f"\n\n{DEMO_MODEL_NOTE}"
    return note


# ---------------------------------------------------------------------------- layout
def apply_preset(config: StudioConfig, name: str | None, subject: str) -> tuple[Any, ...]:
    """Values a studio preset puts in (prompt, negative, resolution, width, height, steps, guidance, images, lora, description)."""
    preset = config.preset(name or "")
    if preset is None:
        return (gr.skip(),) * 10
    size = config.resolutions[preset.resolution] if preset.resolution else None

    def keep(value: Any) -> Any:
        return gr.skip() if value is None else value

    return (
        preset.render_prompt(subject),
        preset.negative_prompt,
        keep(preset.resolution),
        size[0] if size else gr.skip(),
        size[1] if size else gr.skip(),
        keep(preset.steps),
        keep(preset.guidance),
        keep(preset.num_images),
        keep(preset.lora_scale),
        preset.description,
    )


def reuse_seed_values(info: dict[str, Any] | None) -> tuple[Any, Any]:
    if not info or "seed" not in info:
        gr.Warning("Generate an image first: there is no last seed yet.", title="Seed")
        return gr.skip(), gr.skip()
    return info["seed"], False


def build_studio(studio: Studio, config: StudioConfig, examples: list[ExamplePrompt], max_images: int,
                 concurrency_limit: int) -> gr.Blocks:
    """The studio page (``gr.Blocks``) wired to ``studio``; call ``.queue()`` before mounting."""
    defaults = config.defaults
    width0, height0 = config.resolutions[defaults.resolution]
    job_options = dict(concurrency_limit=concurrency_limit, concurrency_id=JOB_CONCURRENCY_ID)

    with gr.Blocks(title="Portrait Studio", fill_width=True, delete_cache=CACHE_CLEANUP) as demo:
        with gr.Row(elem_id="header"):
            gr.Markdown("# Portrait Studio\nAI portraits for photographers, served by a pool of GPU workers.")
            model_info = gr.Markdown("Checking the workers…", elem_id="model-note")

        with gr.Row(equal_height=False):
            with gr.Column(scale=5, elem_id="controls"):
                with gr.Group(elem_id="studio-presets"):
                    with gr.Row():
                        preset = gr.Dropdown([p.name for p in config.presets], value=None, label="Studio preset",
                                             elem_id="preset", scale=2)
                        subject = gr.Textbox(label="Subject", placeholder="who is in the photo (optional)",
                                             elem_id="subject", scale=3)
                    preset_description = gr.Markdown("", elem_id="preset-description")
                prompt = gr.Textbox(label="Prompt", lines=3, elem_id="prompt", autofocus=True,
                                    placeholder="Describe the portrait: subject, light, background, lens…")
                negative = gr.Textbox(label="Negative prompt", lines=2, elem_id="negative-prompt",
                                      placeholder="What to avoid (ignored by models without guidance)")
                with gr.Tabs(elem_id="mode-tabs"):
                    with gr.Tab("Create", id="create", elem_id="create-tab"):
                        generate_button = gr.Button("Generate", variant="primary", size="lg", elem_id="generate")
                    with gr.Tab("Retouch", id="retouch", elem_id="retouch-tab"):
                        gr.Markdown("The result keeps the photo's framing and aspect ratio; "
                                    "the prompt says what to change.", elem_classes=["hint"])
                        photo = PhotoInput(type="filepath", label="Photo to retouch", sources=["upload", "clipboard"],
                                           elem_id="retouch-image", height=260)
                        strength = gr.Slider(0.05, 1.0, value=defaults.strength, step=0.05, label="Strength",
                                             info="How much the photo may change", elem_id="strength")
                        retouch_button = gr.Button("Retouch", variant="primary", size="lg", elem_id="retouch-button")

                with gr.Accordion("Settings", open=True, elem_id="settings"):
                    resolution = gr.Dropdown([*config.resolutions, CUSTOM], value=defaults.resolution,
                                             label="Resolution", elem_id="resolution")
                    with gr.Row():
                        # Until the workers' model is known: the default family's size multiple.
                        side = dict(minimum=256, maximum=MAX_SIDE, step=Limits().family.size_multiple)
                        width = gr.Slider(value=width0, label="Width", elem_id="width", **side)
                        height = gr.Slider(value=height0, label="Height", elem_id="height", **side)
                    with gr.Row():
                        steps = gr.Slider(1, 100, value=defaults.steps, step=1, label="Steps", elem_id="steps")
                        guidance = gr.Slider(0.0, 20.0, value=defaults.guidance, step=0.1, label="Guidance",
                                             elem_id="guidance")
                    with gr.Row(elem_id="seed-row"):
                        seed = gr.Number(0, precision=0, minimum=0, maximum=MAX_SEED, label="Seed", elem_id="seed",
                                         scale=3)
                        randomize = gr.Checkbox(True, label="Random", elem_id="seed-random", scale=1)
                        reuse_seed = gr.Button("Reuse last seed", elem_id="reuse-seed", scale=2)
                    with gr.Row():
                        lora_scale = gr.Slider(0.0, 2.0, value=defaults.lora_scale, step=0.05, label="LoRA scale",
                                               elem_id="lora-scale")
                        num_images = gr.Slider(1, max_images, value=min(defaults.num_images, max_images), step=1,
                                               label="Images", elem_id="num-images")

                gr.Examples([[e.prompt, e.negative_prompt] for e in examples], inputs=[prompt, negative],
                            label="Example prompts", elem_id="examples", examples_per_page=5)

            with gr.Column(scale=6, elem_id="results"):
                status = gr.Markdown("", elem_id="progress")
                error = gr.Markdown("", visible=False, elem_id="error", elem_classes=["error-area"])
                gallery = gr.Gallery(label="Results", columns=2, height=640, object_fit="contain",
                                     buttons=["download", "download_all", "fullscreen"], elem_id="gallery",
                                     interactive=False)
                summary = gr.Markdown("", elem_id="info-summary")
                with gr.Accordion("Generation details", open=False):
                    info = gr.JSON(label="Info", elem_id="info")

        # Inputs of the client API (hidden): None = the model's default, seed -1 = random.
        with gr.Column(visible=False, elem_id="api-inputs"):
            api_prompt = gr.Textbox(label="prompt")
            api_negative = gr.Textbox("", label="negative_prompt")
            api_steps = gr.Number(None, precision=0, label="steps")
            api_guidance = gr.Number(None, label="guidance")
            api_width = gr.Number(None, precision=0, label="width")
            api_height = gr.Number(None, precision=0, label="height")
            api_seed = gr.Number(-1, precision=0, label="seed")
            api_lora = gr.Number(1.0, label="lora_scale")
            api_images = gr.Number(1, precision=0, label="num_images")
            api_image = PhotoInput(type="filepath", label="image")
            api_strength = gr.Number(defaults.strength, label="strength")

        ui_outputs = [gallery, info, summary, error, model_info]
        progress_on = dict(show_progress_on=[status, gallery])
        common = [steps, guidance]
        gr.on(
            [generate_button.click, prompt.submit], studio.ui_generate,
            [prompt, negative, *common, width, height, seed, randomize, lora_scale, num_images],
            ui_outputs, api_visibility="private", **progress_on, **job_options,
        )
        retouch_button.click(
            studio.ui_retouch,
            [photo, strength, prompt, negative, *common, seed, randomize, lora_scale, num_images],
            ui_outputs, api_visibility="private", **progress_on, **job_options,
        )
        gr.on(
            [], studio.api_generate,
            [api_prompt, api_negative, api_steps, api_guidance, api_width, api_height, api_seed, api_lora, api_images],
            [gallery, info], api_name="generate", **job_options,
        )
        gr.on(
            [], studio.api_retouch,
            [api_image, api_prompt, api_strength, api_negative, api_steps, api_guidance, api_seed, api_lora,
             api_images],
            [gallery, info], api_name="retouch", **job_options,
        )

        preset.input(
            lambda name, who: apply_preset(config, name, who), [preset, subject],
            [prompt, negative, resolution, width, height, steps, guidance, num_images, lora_scale, preset_description],
            api_visibility="private", queue=False,
        )
        resolution.input(
            lambda name: tuple(config.resolutions[name]) if name in config.resolutions else (gr.skip(), gr.skip()),
            [resolution], [width, height], api_visibility="private", queue=False,
        )
        gr.on(
            [width.input, height.input], lambda w, h: config.resolution_name(int(w), int(h)), [width, height],
            [resolution], api_visibility="private", queue=False, trigger_mode="always_last",
        )
        reuse_seed.click(reuse_seed_values, [info], [seed, randomize], api_visibility="private", queue=False)
        demo.load(studio.page_load, None, [model_info, steps, guidance, width, height, num_images],
                  api_visibility="private")
    return demo
