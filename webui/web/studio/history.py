"""The studio's History (with ``--jobs-url``): the user's jobs newest first, a page at a time, filtered by text in
the prompt, preset and dates; one opened with its settings, put back into the form, downloaded or deleted.

Whose jobs: the page user's login (the ``Authorization`` HAProxy checked, passed on to the jobs service); on a
site without a login, every job is one owner's. The web front keeps nothing: each page comes from the jobs
service, and a page's session holds only the short summaries it has shown (at most ``MAX_SHOWN``), so memory
stays flat however many jobs the store has. Thumbnails are loaded by the browser from the jobs service.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr
from gradio.utils import get_upload_folder

from webui.web.jobs_client import JobsClient, JobsError
from webui.web.jobs_wire import PRESET
from webui.web.studio.history_images import HistoryImages
from webui.web.studio.history_view import (
    RESOLUTION,
    card,
    day_range,
    details,
    form_values,
    job_seeds,
    settings,
    summary,
)
from webui.web.studio.job_page import FORM
from webui.web.studio.jobs_runner import login_of

logger = logging.getLogger(__name__)

PAGE_SIZE = 12
"""Jobs one "More" adds."""
MAX_SHOWN = 120
"""The most jobs a page shows at once (filters find older ones)."""
NOTHING = {"entries": [], "cursor": None, "query": {}}
"""A history that shows nothing yet."""


class HistoryPanel:
    """The History section's events; ``form`` names the form's components that "Use these settings" fills (the
    Resolution menu named by ``resolution_name``: the choice of a size, else left as it is); ``images``: the opened
    job's image rows (``cache_dir``: Gradio's cache, by default its upload folder)."""

    def __init__(self, client: JobsClient, form: tuple[str, ...] = (*FORM, PRESET, RESOLUTION),
                 page_size: int = PAGE_SIZE, cache_dir: Path | None = None,
                 resolution_name: Callable[[int, int], str] | None = None) -> None:
        self.client = client
        self.form = form
        self.page_size = page_size
        self.resolution_name = resolution_name
        self.images = HistoryImages(client, cache_dir or Path(get_upload_folder()), form, resolution_name)

    def _shown(self, listing: dict[str, Any], note: str = "") -> tuple[Any, ...]:
        """(cards, kept listing, More button, note)."""
        entries = listing["entries"]
        more = bool(listing["cursor"]) and len(entries) < MAX_SHOWN
        if not entries:
            note = note or "No jobs yet: what you generate is listed here."
        return (gr.Dataset(samples=[[card(entry)] for entry in entries]), listing, gr.Button(visible=more),
                gr.Markdown(note, visible=bool(note)))

    async def _page(self, listing: dict[str, Any], request: gr.Request | None) -> dict[str, Any]:
        query = {**listing["query"], "limit": str(self.page_size)}
        if listing["cursor"]:
            query["cursor"] = listing["cursor"]
        page = await self.client.listing(query, login_of(request))
        return {"entries": [*listing["entries"], *map(summary, page.jobs)][:MAX_SHOWN], "cursor": page.next_cursor,
                "query": listing["query"]}

    async def search(self, text: str, preset: str | None, since: str, until: str,
                     request: gr.Request | None = None) -> tuple[Any, ...]:
        """The newest page of the jobs the filters let through."""
        try:
            query = {**day_range(since, until), "q": (text or "").strip(), "preset": preset or ""}
            listing = await self._page({**NOTHING, "query": {k: v for k, v in query.items() if v}}, request)
        except (ValueError, JobsError) as exc:
            return gr.skip(), gr.skip(), gr.skip(), gr.Markdown(f"**Could not list your jobs:** {exc}", visible=True)
        return self._shown(listing, "" if listing["entries"] or not listing["query"] else "No job matches.")

    async def more(self, listing: dict[str, Any], request: gr.Request | None = None) -> tuple[Any, ...]:
        """The next page, added below the ones shown."""
        try:
            return self._shown(await self._page(listing or NOTHING, request))
        except JobsError as exc:
            return gr.skip(), gr.skip(), gr.skip(), gr.Markdown(f"**Could not list more:** {exc}", visible=True)

    async def open(self, index: int | None, listing: dict[str, Any],
                   request: gr.Request | None = None) -> tuple[Any, ...]:
        """(details, settings, chosen, opened group, confirm row): the clicked job, as the jobs service has it."""
        entries = (listing or NOTHING)["entries"]
        if index is None or not 0 <= index < len(entries):
            return (gr.skip(),) * 5
        try:
            job = await self.client.get(entries[index]["id"], login_of(request))
        except JobsError as exc:
            return f"**Could not open the job:** {exc}", None, None, gr.Group(visible=True), gr.Row(visible=False)
        chosen = {"id": job.id, "settings": settings(job), "seeds": job_seeds(job),
                  "photo": bool(job.input.get("init_image"))}
        return details(job), chosen["settings"], chosen, gr.Group(visible=True), gr.Row(visible=False)

    async def use(self, chosen: dict[str, Any] | None, request: gr.Request | None = None) -> tuple[Any, ...]:
        """(the form's values, tabs, size controls, Retouch photo): the opened job's settings into the form (its own
        seed; a value it lacks stays as it is), on the tab that makes it again; a retouch's photo with them while
        its job keeps it."""
        if not chosen:
            return (gr.skip(),) * (len(self.form) + 3)
        values = [gr.skip() if value is None else value
                  for value in form_values(chosen["settings"], self.form, self.resolution_name)]
        if not chosen["settings"].get("retouch"):
            gr.Info("The form has this job's settings: Generate makes it again.", title="History")
            return *values, gr.Tabs(selected="create"), gr.Column(visible=True), gr.skip()
        photo = await self.images.kept_photo(chosen["id"], request)
        gr.Info("The Retouch tab has this job's photo and settings: Retouch makes it again." if photo else
                "The Retouch tab has this job's settings; its photo is no longer kept: choose it again.",
                title="History")
        return *values, gr.Tabs(selected="retouch"), gr.Column(visible=False), photo or gr.skip()

    async def delete(self, chosen: dict[str, Any] | None, listing: dict[str, Any],
                     request: gr.Request | None = None) -> tuple[Any, ...]:
        """(cards, kept listing, More button, note, opened group): the confirmed Delete; the job leaves the list."""
        if not chosen:
            return (gr.skip(),) * 5
        try:
            await self.client.delete(chosen["id"], login_of(request))
        except JobsError as exc:
            return gr.skip(), gr.skip(), gr.skip(), gr.Markdown(f"**Not deleted:** {exc}", visible=True), gr.skip()
        logger.info("job %s deleted from the history", chosen["id"])
        listing = {**(listing or NOTHING)}
        listing["entries"] = [entry for entry in listing["entries"] if entry["id"] != chosen["id"]]
        return (*self._shown(listing, f"Deleted job {chosen['id']} and its images."), gr.Group(visible=False))
