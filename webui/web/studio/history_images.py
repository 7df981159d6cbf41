"""The opened History job's images, a row each: its thumbnail and seed, "Make this image again" (the form takes
that image's own recipe: its seed, one image, the job's prompt, steps, guidance, size and preset; then Generate)
and "Retouch this" (the image becomes the Retouch tab's photo, with the job's prompt).

"Make this image again" presses the page's own Generate button (``PRESS_GENERATE``) instead of starting a job of
its own: it is the page's usual job (HAProxy counts it as one, the page follows it and shows its result where
every result is shown), and the same seed, size and settings give the same pixels. A retouch's image is made again
the same way from the Retouch tab (``PRESS_RETOUCH``), with the photo the job kept (``kept_photo``: the very JPEG
it was given, sent on as it is); once the account's retention removed that photo, its row offers "Retouch this"
only.
"""

from __future__ import annotations

import asyncio
import html
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import gradio as gr

from webui.web.job_files import result_name
from webui.web.jobs_client import JobsClient, JobsError
from webui.web.jobs_wire import job_path
from webui.web.studio.history_view import THUMB, form_values
from webui.web.studio.jobs_runner import login_of
from webui.web.studio.photos import save_file

logger = logging.getLogger(__name__)


def press(button_id: str) -> str:
    """The browser's part of "Make this image again", once the form has the image's values: press the page's own
    job button ``button_id``."""
    return f"""async () => {{
  for (let tries = 0; tries < 100; tries++) {{  // its tab may still be drawing the button
    const button = document.querySelector('#{button_id}');
    if (button) {{ document.querySelector('#results')?.scrollIntoView(); button.click(); return; }}
    await new Promise(done => setTimeout(done, 20));
  }}
}}"""


PRESS_GENERATE = press("generate")
PRESS_RETOUCH = press("retouch-button")
SHOW_PHOTO = "() => document.querySelector('#retouch-image')?.scrollIntoView({block: 'center'})"
"""The browser's part of "Retouch this", once the photo is in the Retouch tab."""
ROW_THUMB = THUMB.replace("160px", "72px")


def image_caption(job_id: str, index: int, seed: int | None) -> str:
    """A row's thumbnail and words (HTML; the jobs service's thumbnail, cached by the browser)."""
    words = f"Image {index + 1}" + (f" · seed {seed}" if seed is not None else "")
    return (f'<div class="history-image" style="display:flex;gap:8px;align-items:center">'
            f'<img src="{html.escape(job_path(job_id, "thumbnails", index))}" alt="" loading="lazy" '
            f'style="{ROW_THUMB}"><span>{html.escape(words)}</span></div>')


class HistoryImages:
    """The image rows' events; ``form`` names the components "Make this image again" fills (``HistoryPanel.form``),
    ``cache_dir`` is Gradio's cache, where a retouched image's bytes are put for the photo input."""

    def __init__(self, client: JobsClient, cache_dir: Path, form: tuple[str, ...],
                 resolution_name: Callable[[int, int], str] | None = None) -> None:
        self.client = client
        self.cache_dir = cache_dir
        self.form = form
        self.resolution_name = resolution_name

    @staticmethod
    def shown(chosen: dict[str, Any] | None, rows: int) -> tuple[Any, ...]:
        """Per row (``rows`` of them): (row, caption, "Make this image again" for a generation, and for a retouch
        whose photo is kept), for the opened job."""
        seeds = (chosen or {}).get("seeds") or []
        retouch = bool((chosen or {}).get("settings", {}).get("retouch"))
        photo = bool((chosen or {}).get("photo"))
        updates: list[Any] = []
        for index in range(rows):
            if index < len(seeds):
                known = seeds[index] is not None
                updates += [gr.Row(visible=True), image_caption(chosen["id"], index, seeds[index]),
                            gr.Button(visible=not retouch and known), gr.Button(visible=retouch and photo and known)]
            else:
                updates += [gr.Row(visible=False), "", gr.Button(visible=False), gr.Button(visible=False)]
        return tuple(updates)

    def again(self, index: int) -> Callable[..., Awaitable[tuple[Any, ...]]]:
        """Row ``index``'s "Make this image again": (the form's values, tabs, size controls, Retouch photo: a
        retouch's own, kept by its job); an error (and no job) when the image's seed or the photo is not known."""

        async def again(chosen: dict[str, Any] | None, request: gr.Request) -> tuple[Any, ...]:
            seeds = (chosen or {}).get("seeds") or []
            if index >= len(seeds) or seeds[index] is None:
                raise gr.Error("This image's seed is not known: it cannot be made again.", title="History",
                               print_exception=False)
            recipe = {**chosen["settings"], "seed": seeds[index], "num_images": 1}
            values = (gr.skip() if value is None else value
                      for value in form_values(recipe, self.form, self.resolution_name))
            retouch = bool(recipe.get("retouch"))
            photo = await self.kept_photo(chosen["id"], request) if retouch else None
            if retouch and photo is None:
                raise gr.Error("This retouch's photo is no longer kept: choose it again in the Retouch tab.",
                               title="History", print_exception=False)
            logger.info("job %s: image %d made again from the history", chosen["id"], index + 1)
            return (*values, gr.Tabs(selected="retouch" if retouch else "create"), gr.Column(visible=not retouch),
                    photo or gr.skip())

        return again

    async def kept_photo(self, job_id: str, request: gr.Request | None) -> str | None:
        """The photo a retouch job was given, as a file in Gradio's cache (the same JPEG bytes); None when its
        account's retention removed it. Raises ``gr.Error`` when the jobs service cannot give it."""
        try:
            photo = await self.client.photo(job_id, login_of(request))  # the page user's job
        except JobsError as exc:
            if exc.status == 404:
                return None
            raise gr.Error(f"Could not fetch the photo: {exc}", title="History", print_exception=False) from None
        return str(await asyncio.to_thread(save_file, photo, self.cache_dir, f"photo-{job_id}.jpg"))

    def retouch(self, index: int) -> Callable[..., Awaitable[tuple[Any, ...]]]:
        """Row ``index``'s "Retouch this": (photo, prompt, negative prompt, tabs, size controls)."""

        async def retouch(chosen: dict[str, Any] | None, request: gr.Request) -> tuple[Any, ...]:
            if not chosen or index >= len(chosen.get("seeds") or []):
                raise gr.Error("Open a job with images first.", title="History", print_exception=False)
            try:
                png = await self.client.result(chosen["id"], index, login_of(request))  # the page user's job
            except JobsError as exc:
                raise gr.Error(f"Could not fetch the image: {exc}", title="History", print_exception=False) from None
            path = await asyncio.to_thread(save_file, png, self.cache_dir, result_name(chosen["id"], index))
            settings = chosen["settings"]
            return (str(path), settings.get("prompt", gr.skip()), settings.get("negative_prompt", gr.skip()),
                    gr.Tabs(selected="retouch"), gr.Column(visible=False))

        return retouch
