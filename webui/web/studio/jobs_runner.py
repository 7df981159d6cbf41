"""Generations as durable jobs (``--jobs-url``): submit to the jobs service, follow its events, fetch the results.

A job has an id and a record before any GPU work starts, and it runs whether or not anybody follows it: the
page that asked may close, reload or come back through another web front and follow the same job again
(``follow``). Only an API client that asked synchronously keeps today's protection: when its call is cancelled
or it stops listening, its job is canceled (``run_for_caller``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import gradio as gr
from starlette.requests import Request

from webui import trace
from webui.schema import GenerationResult
from webui.web.job_files import result_name
from webui.web.jobs_client import JobsClient, JobsError
from webui.web.jobs_wire import CANCELED, FAILED, PROGRESS, QUEUED, STARTED, JobSnapshot, ShareLinks
from webui.web.presence import EventStreams, cancelled_when_client_leaves
from webui.web.studio.info import DENOISING, image_captions, info_summary, result_info
from webui.web.studio.photos import save_file
from webui.web.studio.queue_words import queued_words

logger = logging.getLogger(__name__)

Gallery = list[tuple[Path, str]]


def login_of(request: gr.Request | Request | None) -> str | None:
    """The ``Authorization`` the page's user (or a route's client) logged in to the site with (HAProxy checked it),
    or their session (``Session``, set by the sign-in gate from their cookie): the jobs service makes their jobs
    theirs by it. None on a site without a login (everyone's jobs are then one owner's)."""
    return (request.headers.get("authorization") or None) if request is not None else None


class JobCanceled(JobsError):
    """The job was canceled (by its Cancel button or an API client) before it finished."""


def unrecorded_generation(job: JobSnapshot) -> dict[str, Any]:
    """A stand-in for the worker's account of a job that succeeded before jobs kept it (store revision 0003):
    what its input and results say, the rest unknown."""
    given, first = job.input, job.results[0] if job.results else None
    seed = given.get("seed") or 0
    params = {"prompt": given.get("prompt", ""), "negative_prompt": given.get("negative_prompt", ""),
              "steps": given.get("steps") or 0, "guidance": given.get("guidance") or 0.0,
              "width": (first.width if first else None) or given.get("width") or 0,
              "height": (first.height if first else None) or given.get("height") or 0, "seed": seed,
              "lora_scale": given.get("lora_scale", 1.0), "num_images": len(job.results),
              "mode": "retouch" if given.get("init_image") else "text2img", "strength": given.get("strength")}
    return {"seed": seed, "params": params, "worker_id": "unknown", "model": "unknown",
            "timings": {"queue_ms": 0.0, "generate_ms": 0.0, "total_ms": 0.0}}


def job_info(job: JobSnapshot, web_node: str, elapsed_s: float) -> dict[str, Any]:
    """The info dict of a succeeded job (shown under the result, returned by the API): the worker path's keys
    and values (``result_info``, from the worker's account the job kept), plus the job's id and result URLs.
    Attempts count every worker attempt, and one more for each dispatcher that lost the job mid-run."""
    generation = job.generation or unrecorded_generation(job)
    result = GenerationResult.model_validate({**generation, "images": []})
    attempts = int(generation.get("attempts", 1)) + max(job.attempts - 1, 0)
    urls = [result.url for result in job.results]
    return {"job_id": job.id, "result_url": urls[0] if urls else None, "result_urls": urls,
            **result_info(result, attempts, elapsed_s * 1000, web_node)}


def job_summary(info: dict[str, Any]) -> str:
    """One readable line about a finished job (Markdown): the worker path's line and its first result at full size
    (the job's id is in the details view)."""
    return f"{info_summary(info)} · [full size]({info['result_url']})"


class JobRunner:
    """Runs the studio's generations as jobs of the jobs service."""

    def __init__(self, client: JobsClient, web_node: str, cache_dir: Path) -> None:
        self.client = client
        self.web_node = web_node
        self.cache_dir = cache_dir

    async def submit(self, fields: dict[str, Any], login: str | None = None, key: str | None = None) -> str:
        """Record the job (``login``'s: see ``login_of``; ``key``: its ``Idempotency-Key``, default a fresh one); its
        id (``JobsError`` in words when the service refuses it)."""
        job = await self.client.submit(fields, key=key, login=login)
        logger.info("job %s submitted", job.id)
        return job.id

    async def find(self, key: str, login: str | None = None) -> str | None:
        """The id of ``login``'s job submitted with the ``Idempotency-Key`` ``key`` (None: there is none)."""
        listing = await self.client.listing({"key": key, "limit": "1"}, login)
        return listing.jobs[0].id if listing.jobs else None

    async def follow(self, job_id: str, progress: gr.Progress,
                     login: str | None = None) -> tuple[Gallery, dict[str, Any]]:
        """Show ``login``'s job's progress until it ends; its images and info. Raises ``JobsError`` (failed,
        canceled, unreachable) with a message for the user."""
        started = time.monotonic()
        progress(0.0, desc=f"Job {job_id}: waiting for a worker")
        job: JobSnapshot | None = None
        async for event in self.client.events(job_id, login=login):
            if event.name == QUEUED:
                words = queued_words(event.data)
                progress(0.0, desc=f"{words} · job {job_id}" if words else f"Job {job_id}: waiting for a worker")
            elif event.name == STARTED:
                progress(0.0, desc=f"Job {job_id}: starting")
            elif event.name == PROGRESS:  # the worker is named in the details view, not here
                progress((event.data["step"], event.data["steps"]), desc=DENOISING, unit="steps")
            elif event.terminal:
                job = event.snapshot()
        if job is None or job.status == FAILED:
            raise JobsError(job.error if job and job.error else f"The job {job_id} failed.")
        if job.status == CANCELED:
            raise JobCanceled(f"The job {job_id} was canceled.")
        captions = image_captions(job_info(job, self.web_node, 0.0))
        gallery = []
        for index, (result, caption) in enumerate(zip(job.results, captions, strict=True)):
            png = await self.client.result(job_id, index, login)
            path = await asyncio.to_thread(save_file, png, self.cache_dir, result_name(job_id, index))
            gallery.append((path, caption))
            logger.debug("job %s: result %d (%s) fetched", job_id, index, result.sha256)
        return gallery, job_info(job, self.web_node, time.monotonic() - started)

    async def cancel(self, job_id: str, login: str | None = None) -> JobSnapshot:
        return await self.client.cancel(job_id, login)

    async def share(self, job_id: str, login: str | None = None) -> ShareLinks:
        return await self.client.share(job_id, login)

    async def run_for_caller(self, fields: dict[str, Any], progress: gr.Progress, streams: EventStreams,
                             grace: float, login: str | None = None,
                             key: str | None = None) -> tuple[Gallery, dict[str, Any]]:
        """Submit (``login``'s job, with ``key``) and follow it for a caller waiting on the answer (the client API):
        see ``follow_for_caller``."""
        return await self.follow_for_caller(await self.submit(fields, login, key), progress, streams, grace, login)

    async def follow_for_caller(self, job_id: str, progress: gr.Progress, streams: EventStreams, grace: float,
                                login: str | None = None) -> tuple[Gallery, dict[str, Any]]:
        """Follow ``login``'s job for a caller waiting on the answer: when the caller cancels or stops listening
        (``cancelled_when_client_leaves``), the job is canceled too."""
        try:
            with trace.bound(job=job_id):  # its lines here and the jobs service's requests name the job
                async with cancelled_when_client_leaves(streams, grace=grace):
                    return await self.follow(job_id, progress, login)
        except asyncio.CancelledError:
            logger.info("job %s: its caller left; canceling the job", job_id)
            await asyncio.shield(asyncio.ensure_future(self._cancel_quietly(job_id, login)))
            raise

    async def _cancel_quietly(self, job_id: str, login: str | None) -> None:
        try:
            await self.client.cancel(job_id, login)
        except JobsError as exc:
            logger.warning("job %s: could not cancel it: %s", job_id, exc)
