"""What the studio page's events and the client API do: run jobs on the workers with live progress.

``Studio`` sends each job through a ``WorkerClient`` (which retries a job whose worker died), or, with
``--jobs-url``, through the jobs service (``JobRunner``: a durable job the page can re-attach to), and turns
the result into gallery images and an info dict; failures become readable messages.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import gradio as gr

from webui.contract import LISTEN_GRACE, MAX_IMAGES, MAX_UPLOAD_BYTES, MAX_UPLOAD_PIXELS
from webui.images import UploadError
from webui.web import faults
from webui.web.event_ids import event_ids, event_job_key
from webui.web.presence import EventStreams, cancelled_when_client_leaves
from webui.web.studio.form_events import output_size, size_rules
from webui.web.studio.form_fields import NO_PROMPT, FormRefused, RetouchRefused, api_seed, job_fields, ui_seed
from webui.web.studio.info import DENOISING, generation_info, image_captions, info_summary, model_note
from webui.web.studio.jobs_runner import JobRunner, login_of
from webui.web.studio.photos import encode_photo_file, save_image
from webui.web.studio.sizes import snap_side
from webui.web.worker_client import WorkerClient, WorkerInfoCache
from webui.web.worker_errors import WorkerError

logger = logging.getLogger(__name__)


class Studio:
    """Runs the page's and the API's jobs on the workers."""

    def __init__(self, client: WorkerClient, worker_info: WorkerInfoCache, web_node: str, cache_dir: Path,
                 max_upload_bytes: int = MAX_UPLOAD_BYTES, max_upload_pixels: int = MAX_UPLOAD_PIXELS,
                 streams: EventStreams | None = None, max_images: int = MAX_IMAGES,
                 listen_grace: float = LISTEN_GRACE, jobs: JobRunner | None = None) -> None:
        self.client = client
        self.jobs = jobs
        """With ``--jobs-url``: every generation is a job of the jobs service."""
        self.max_images = max_images
        """The most images this front offers (the workers' own limit may be lower)."""
        self.listen_grace = listen_grace
        """Seconds a running job's client may go without an open event stream."""
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

        def on_progress(step: int, total: int, worker_id: str) -> None:  # the worker: in the details view
            progress((step, total), desc=DENOISING, unit="steps")

        def on_retry(attempt: int, max_attempts: int, cause: str) -> None:
            progress(0.0, desc=f"Worker lost, retrying (attempt {attempt}/{max_attempts})")

        progress(0.0, desc="Waiting for a worker")
        async with cancelled_when_client_leaves(self.streams, grace=self.listen_grace):
            outcome = await self.client.generate(fields, on_progress=on_progress, on_retry=on_retry)
        info = generation_info(outcome, self.web_node)
        gallery = []
        for data, seed, caption in zip(outcome.result.images, info["seeds"], image_captions(info), strict=True):
            path = await asyncio.to_thread(save_image, data, self.cache_dir, f"portrait-{seed}.png")
            gallery.append((path, caption))
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
        request: gr.Request | None = None,
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
            gallery: ``[{"image": path of a PNG, "caption": "#1 · seed N"}, ...]``: each image's own seed (N, N+1,
            ...); each PNG carries its recipe.
            info: seed, seeds (one per image), width, height, steps, guidance, lora_scale, num_images, mode, strength,
            prompt, negative_prompt, model, worker_id, web_node, attempts and timings
            (queue_ms, generate_ms, total_ms at the worker; web_ms at this front).
        Errors reach the client as one message: the invalid field and its allowed range, an
        out-of-memory hint (lower the resolution or image count), or "No worker could finish
        the job after N attempts: <cause>".
        """
        fields = job_fields(prompt, negative_prompt, steps, guidance, width, height, api_seed(seed), lora_scale,
                            num_images)
        return await self.api_job(fields, progress, "Generation failed", login_of(request))

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
        request: gr.Request | None = None,
    ) -> tuple[list[tuple[Path, str]], dict[str, Any]]:
        """Retouch a photo: the result keeps the photo's composition (``strength`` 0-1: how much may change).

        The photo (PNG, JPEG or WebP) may have at most the front's ``max_upload_bytes`` bytes and
        ``max_upload_pixels`` pixels. The result has the photo's size, as on the page: scaled down to the
        model's largest side and rounded to its size multiple (``sizes.retouch_size``). Other arguments as in
        ``/generate``. Returns (gallery, info).
        """
        if image is None:
            raise gr.Error("image: upload a photo to retouch.", title="Retouch", print_exception=False)
        try:
            retouch = await self.retouch_fields(image, strength)
            width, height = await output_size(self.worker_info, image)
        except UploadError as exc:
            raise gr.Error(f"image: {exc}.", title="Retouch", print_exception=False) from None
        except OSError:  # its message may name the server's path
            raise gr.Error("image: the photo could not be read.", title="Retouch", print_exception=False) from None
        fields = job_fields(prompt, negative_prompt, steps, guidance, width, height, api_seed(seed), lora_scale,
                            num_images)
        return await self.api_job({**fields, **retouch}, progress, "Retouch failed", login_of(request))

    async def api_job(self, fields: dict[str, Any], progress: gr.Progress, title: str,
                      login: str | None = None) -> tuple[Any, ...]:
        """A job started by an API client (``login``'s with ``--jobs-url``: its quota holds, the job is in its
        history): failures become ``gr.Error`` (the client raises it)."""
        try:
            with event_ids():
                if self.jobs is not None:
                    await faults.before_record(fields)
                    return await self.jobs.run_for_caller(fields, progress, self.streams, self.listen_grace, login,
                                                          event_job_key())
                return await self.run(fields, progress)
        except WorkerError as exc:
            raise gr.Error(str(exc), title=title, print_exception=False) from None

    async def ui_job(self, fields: dict[str, Any], progress: gr.Progress) -> tuple[Any, ...]:
        """A job started from the page: (gallery, info, summary, error area, model note)."""
        try:
            with event_ids():
                gallery, info = await self.run(fields, progress)
        except WorkerError as exc:  # said once, in the error area beside the results
            error = gr.Markdown(f"**Could not generate:** {exc}", visible=True)
            return gr.skip(), gr.skip(), gr.skip(), error, gr.skip()
        note = model_note(info["model"], self.web_node)
        return gallery, info, info_summary(info), gr.Markdown("", visible=False), note

    async def generate_fields(
        self, prompt: str, negative_prompt: str, steps: float, guidance: float, width: float, height: float,
        seed: float | None, randomize: bool, lora_scale: float, num_images: float,
    ) -> dict[str, Any]:
        """The Generate button's job (``FormRefused`` without a prompt). A typed size is rounded to the model's
        multiple, as the boxes show it once left (``FormEvents.size_typed``)."""
        if not (prompt or "").strip():
            raise FormRefused(NO_PROMPT)
        multiple, max_side = await size_rules(self.worker_info)
        width, height = snap_side(width, multiple, max_side), snap_side(height, multiple, max_side)
        return job_fields(prompt, negative_prompt, steps, guidance, width, height, ui_seed(seed, randomize),
                          lora_scale, num_images)

    async def retouch_job_fields(
        self, photo: str | None, strength: float, prompt: str, negative_prompt: str, steps: float,
        guidance: float, seed: float | None, randomize: bool, lora_scale: float, num_images: float,
    ) -> dict[str, Any]:
        """The Retouch button's job (``FormRefused`` without a usable photo or a prompt): the result has the photo's
        size, within the model's limits (``sizes.retouch_size``)."""
        if photo is None:
            raise RetouchRefused("Choose a photo to retouch first.")
        if not (prompt or "").strip():
            raise FormRefused(NO_PROMPT)
        try:
            retouch = await self.retouch_fields(photo, strength)
            width, height = await output_size(self.worker_info, photo)
        except (UploadError, OSError) as exc:
            raise RetouchRefused(f"This photo cannot be used: {exc}.") from None
        fields = job_fields(prompt, negative_prompt, steps, guidance, width, height, ui_seed(seed, randomize),
                            lora_scale, num_images)
        return {**fields, **retouch}

    async def ui_generate(
        self, prompt: str, negative_prompt: str, steps: float, guidance: float, width: float, height: float,
        seed: float | None, randomize: bool, lora_scale: float, num_images: float,
        progress: gr.Progress = gr.Progress(),
    ) -> tuple[Any, ...]:
        """The Generate button."""
        try:
            fields = await self.generate_fields(prompt, negative_prompt, steps, guidance, width, height, seed,
                                                randomize, lora_scale, num_images)
        except FormRefused as refused:
            return refused.outputs()
        return await self.ui_job(fields, progress)

    async def ui_retouch(
        self, photo: str | None, strength: float, prompt: str, negative_prompt: str, steps: float,
        guidance: float, seed: float | None, randomize: bool, lora_scale: float, num_images: float,
        progress: gr.Progress = gr.Progress(),
    ) -> tuple[Any, ...]:
        """The Retouch button."""
        try:
            fields = await self.retouch_job_fields(photo, strength, prompt, negative_prompt, steps, guidance, seed,
                                                   randomize, lora_scale, num_images)
        except FormRefused as refused:
            return refused.outputs()
        return await self.ui_job(fields, progress)

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
