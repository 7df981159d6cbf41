"""The studio page with durable jobs (``--jobs-url``): submit, follow, re-attach, cancel.

A click submits the job and keeps its id and the form in the browser (``gr.BrowserState``: localStorage, the
same key and cipher on every web front), then follows the job. A page load restores the form and follows the
kept job again: a reload, a reopened tab or another web front (after this one died) shows the running job's
progress and then its result, and never starts a second generation. Following is all the page's event does:
when Gradio drops it (the browser closed) the job runs on; only the Cancel button cancels it.
"""

from __future__ import annotations

import logging
from typing import Any

import gradio as gr

from webui.web.event_ids import PAGE_JOB_KEY_PREFIX, adopted_event, event_job_key
from webui.web.jobs_client import JobsError
from webui.web.jobs_wire import PRESET
from webui.web.presence import client_listening
from webui.web.studio.form_fields import FormRefused
from webui.web.studio.handlers import Studio
from webui.web.studio.info import model_note
from webui.web.studio.jobs_runner import JobCanceled, JobRunner, job_summary, login_of

logger = logging.getLogger(__name__)

FORM = ("prompt", "negative_prompt", "steps", "guidance", "width", "height", "seed", "randomize", "lora_scale",
        "num_images", "strength")
"""The page's form as kept in the browser, in the order of ``restore``'s outputs."""
NOT_LISTENING = ("**Not started:** this page did not connect in time, so nothing was made. "
                 "Press the button again.")
"""The error area's words when the page opened its event stream only after the listen grace (a slow device)."""
GONE = (404, 410)
"""The jobs service's answers for a job it no longer has (expired) or never had."""
STORAGE_KEY = "portrait-studio-job"
STATE_CIPHER = "portrait-studio-job-v1"
"""BrowserState encrypts with a key it sends to the page: no secret, only the same on every web front (a
random one per process would make the state unreadable to every other front)."""


def browser_state() -> gr.BrowserState:
    """The page's kept job: ``{"job": id or None, "form": {...}}``."""
    return gr.BrowserState({}, storage_key=STORAGE_KEY, secret=STATE_CIPHER)


def kept(job: str | None, form: dict[str, Any]) -> dict[str, Any]:
    return {"job": job, "form": form}


class JobPage:
    """The page's events when every generation is a job of the jobs service."""

    def __init__(self, studio: Studio, runner: JobRunner) -> None:
        self.studio = studio
        self.runner = runner

    async def submit(self, fields: dict[str, Any], form: dict[str, Any], preset: str | None = None,
                     request: gr.Request | None = None) -> tuple[Any, ...]:
        """(kept state, error area): the job recorded (the page user's, labelled with its studio ``preset``), or why
        not (the error area; no job kept). A client that is not listening gets no job (``client_listening``): a
        job outlives its page, and must have had one."""
        if not await client_listening(self.studio.streams, grace=self.studio.listen_grace):
            return kept(None, form), gr.Markdown(NOT_LISTENING, visible=True)  # read only by a page that came late
        try:
            key, login = event_job_key(prefix=PAGE_JOB_KEY_PREFIX), login_of(request)
            # Joined again by the stream relay (its web front died): the job it may already have recorded.
            job_id = (await self.runner.find(key, login) if adopted_event() else None) or await self.runner.submit(
                {**fields, PRESET: preset or None}, login, key)
        except JobsError as exc:  # said once, in the error area
            return kept(None, form), gr.Markdown(f"**Could not generate:** {exc}", visible=True)
        return kept(job_id, form), gr.Markdown("", visible=False)

    async def submit_generate(self, prompt: str, negative_prompt: str, steps: float, guidance: float, width: float,
                              height: float, seed: float | None, randomize: bool, lora_scale: float,
                              num_images: float, strength: float, preset: str | None = None,
                              request: gr.Request | None = None) -> tuple[Any, ...]:
        """The Generate button: record the job, keep its id and the form in the browser."""
        form = dict(zip(FORM, (prompt, negative_prompt, steps, guidance, width, height, seed, randomize, lora_scale,
                               num_images, strength), strict=True))
        try:
            fields = await self.studio.generate_fields(prompt, negative_prompt, steps, guidance, width, height, seed,
                                                       randomize, lora_scale, num_images)
        except FormRefused as refused:
            return kept(None, form), refused.error_area()
        return await self.submit(fields, form, preset, request)

    async def submit_retouch(self, photo: str | None, strength: float, prompt: str, negative_prompt: str,
                             steps: float, guidance: float, width: float, height: float, seed: float | None,
                             randomize: bool, lora_scale: float, num_images: float, preset: str | None = None,
                             request: gr.Request | None = None) -> tuple[Any, ...]:
        """The Retouch button: the photo goes into the job's input (the photo itself is not kept in the browser)."""
        form = dict(zip(FORM, (prompt, negative_prompt, steps, guidance, width, height, seed, randomize, lora_scale,
                               num_images, strength), strict=True))
        try:
            fields = await self.studio.retouch_job_fields(photo, strength, prompt, negative_prompt, steps, guidance,
                                                          seed, randomize, lora_scale, num_images)
        except FormRefused as refused:
            return kept(None, form), refused.error_area()
        return await self.submit(fields, form, preset, request)

    async def follow(self, state: dict[str, Any] | None, progress: gr.Progress = gr.Progress(),
                     request: gr.Request | None = None) -> tuple[Any, ...]:
        """Follow the kept job: (gallery, info, summary, error area, model note, kept state); nothing when none is
        kept. Once its outcome is shown the job is forgotten (a later reload opens a fresh page, as without
        jobs); a job whose page went away before its end is still kept, and shown at the next load."""
        job_id = (state or {}).get("job")
        if not job_id:
            return (gr.skip(),) * 6
        forget = {}
        try:
            gallery, info = await self.runner.follow(job_id, progress, login_of(request))
        except JobCanceled as exc:
            return gr.skip(), gr.skip(), gr.skip(), gr.Markdown(f"**Canceled:** {exc}", visible=True), gr.skip(), forget
        except JobsError as exc:
            if exc.status in GONE:  # a kept job that expired: nothing to show again
                logger.info("job %s: %s", job_id, exc)
                return (gr.skip(),) * 5 + (forget,)
            error = gr.Markdown(f"**Could not generate:** {exc}", visible=True)
            return gr.skip(), gr.skip(), gr.skip(), error, gr.skip(), forget
        note = model_note(info["model"], self.studio.web_node)
        return gallery, info, job_summary(info), gr.Markdown("", visible=False), note, forget

    async def cancel(self, state: dict[str, Any] | None, request: gr.Request | None = None) -> None:
        """The Cancel button: cancel the kept job (a finished one stays as it is)."""
        job_id = (state or {}).get("job")
        if not job_id:
            gr.Info("There is no job to cancel.", title="Cancel")
            return
        try:
            job = await self.runner.cancel(job_id, login_of(request))
        except JobsError as exc:
            gr.Warning(f"Could not cancel the job: {exc}", title="Cancel")
            return
        logger.info("job %s: cancel asked from the page (now %s)", job_id, job.status)
        gr.Info(f"Job {job_id} was already {job.status}." if job.terminal else f"Canceling job {job_id}.",
                title="Cancel")

    async def share(self, info: dict[str, Any] | None, request: gr.Request | None = None) -> Any:
        """The Share button: links to the shown result that work without the site's login (Markdown)."""
        job_id = (info or {}).get("job_id")
        if not job_id:
            gr.Info("Generate a portrait first: there is no result to share.", title="Share")
            return gr.skip()
        try:
            links = await self.runner.share(job_id, login_of(request))
        except JobsError as exc:
            gr.Warning(f"Could not make a share link: {exc}", title="Share")
            return gr.skip()
        logger.info("job %s: share links made from the page", job_id)
        shown = " · ".join(f"[image {index + 1}]({url})" for index, url in enumerate(links.urls))
        until = links.expires_at.strftime("%Y-%m-%d %H:%M UTC")
        return gr.Markdown(f"**Share links** (no login needed, until {until}): {shown}", visible=True)

    @staticmethod
    def restore(state: dict[str, Any] | None) -> tuple[Any, ...]:
        """The kept form's values (one per ``FORM`` name); skips where nothing is kept."""
        form = (state or {}).get("form") or {}
        return tuple(form[name] if form.get(name) is not None else gr.skip() for name in FORM)
