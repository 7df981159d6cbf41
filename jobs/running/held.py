"""One held job on the workers' queue to its stored outcome: what the dispatcher does with a job it claimed, and
what a synchronous ``POST /generate`` does with the job it recorded for its client.

The job runs with ``run_until_deadline`` (same seed on every attempt: a worker that dies mid-job is replayed).
Meanwhile its lease is renewed every ``renew_s`` and each denoising step recorded (which renews it too). A
renewal that says the job was canceled, or a client that left, stops the stream to the worker (the worker cancels
a job whose client left, so its GPU is free at its next step) and marks the job ``canceled``; a lost lease stops
it and writes nothing. Otherwise the outcome is written once (``finish``/``fail``: the first writer wins).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import anyio
import pybase64
from anyio.to_thread import run_sync
from sqlalchemy import Engine

from jobs.contract import FAILED, LEASE_SECONDS, SUCCEEDED
from jobs.metrics import JobsMetrics
from jobs.running.attempts import Deadline, DeadlinePassed, run_until_deadline
from jobs.store import Image, Job, Lease, fail, finish, mark_canceled, record_progress, renew
from jobs.store.claims import Step
from jobs.store.records import utc_now
from webui.schema import GenerationRequest, GenerationResult
from webui.web.worker_client import JobOutcome, ProgressCallback, WorkerClient
from webui.web.worker_errors import JobRejected

logger = logging.getLogger(__name__)

LOST = "lost"
"""An ``Ending`` whose run lost its lease: the job's new holder (if any) writes its outcome."""


def holder_name() -> str:
    """This process's name in the store's claims: host, pid, and a random tag."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def stored_images(result: GenerationResult) -> list[Image]:
    """The worker's base64 PNGs as the store's images (decoded, never re-encoded; pybase64's SIMD decoder takes
    about 1/40 of the standard library's time, and this is on the way to a waiting client's answer)."""
    return [Image(pybase64.b64decode(data, validate=True), "image/png", result.params.width, result.params.height)
            for data in result.images]


def job_generation(outcome: JobOutcome) -> dict[str, Any]:
    """What the job keeps of the worker's result besides its images: worker_id, model, seed, params, timings, and
    the worker attempts it took (more than 1 when a worker died mid-job and another drew the same image)."""
    return {**outcome.result.model_dump(mode="json", exclude={"images", "image"}), "attempts": outcome.attempts}


def job_fields(job: Job) -> dict[str, Any]:
    """The worker's fields of a stored job (its input without the webhook)."""
    return {name: value for name, value in job.input.items() if name in GenerationRequest.model_fields}


@dataclass(frozen=True)
class Ending:
    """How a run ended: the job's status as it stays (or ``LOST``), with this run's result or error."""

    status: str
    result: GenerationResult | None = None
    error: Exception | None = None


@dataclass(frozen=True)
class HeldRuns:
    """Runs held jobs on ``client`` (the workers' queue), with the store at ``engine``."""

    engine: Engine
    client: WorkerClient
    lease_s: float = LEASE_SECONDS
    renew_s: float = 0.5
    """How often a running job's lease is renewed, which is also how soon a cancel is seen."""
    metrics: JobsMetrics | None = None
    """Where each run's ending and the job's wait for its first step are counted (the service's /metrics)."""

    async def run(self, job: Job | Awaitable[Job], deadline: Deadline, **options: Any) -> Ending:
        """``_run`` (its options below), its ending counted in ``metrics`` for the job's owner."""
        recorded = job if isinstance(job, Job) else asyncio.ensure_future(job)  # read again once recorded
        ending = await self._run(recorded, deadline, **options)
        if self.metrics is not None:
            owner = (recorded if isinstance(recorded, Job) else recorded.result()).owner
            result = ending.result
            self.metrics.ended(ending.status, owner, len(result.images) if result else 0,
                               result.timings.generate_ms / 1000 if result else 0.0)
        return ending

    async def _run(self, job: Job | Awaitable[Job], deadline: Deadline, *, fields: Mapping[str, Any] | None = None,
                   on_progress: ProgressCallback | None = None, client_left: asyncio.Event | None = None,
                   headers: Mapping[str, str] | None = None,
                   deadline_words: Callable[[DeadlinePassed], str] = str,
                   on_result: Callable[[GenerationResult], None] | None = None) -> Ending:
        """Run ``job`` (held by ``job.claim_owner``) to its outcome; ``fields`` default to its stored input.
        ``job`` may still be being recorded (``fields`` then required): the worker is asked at once, beside the
        store's transaction, and the job is held once it is recorded; if recording fails, the generation is
        stopped and the store's error raised. ``client_left`` set: the client went away, the job is canceled.
        ``deadline_words``: the error recorded when no worker ran it before ``deadline``. ``on_result``: called with
        the worker's result just before it is written (a waiting client's answer is prepared meanwhile; its
        thumbnails are made at their first read, not before its answer)."""
        progress: list[tuple[int, int, str]] = []
        stepped = asyncio.Event()
        first_step = self.metrics is not None

        def on_step(step: int, total: int, worker: str) -> None:
            nonlocal first_step
            if first_step and self.metrics is not None and isinstance(job, Job):  # once recorded, if still being
                first_step = False
                if job.attempts <= 1:  # a job taken again was counted before
                    self.metrics.queue_wait.observe(max(0.0, (utc_now() - job.created_at).total_seconds()))
            progress.append((step, total, worker))
            stepped.set()
            if on_progress is not None:
                on_progress(step, total, worker)

        if fields is None:
            assert isinstance(job, Job), "a job still being recorded needs its fields"
            fields = job_fields(job)
        generation = asyncio.ensure_future(run_until_deadline(self.client, fields, deadline, on_step, headers))
        if not isinstance(job, Job):
            try:
                job = await job
            except BaseException:
                generation.cancel()  # closes the worker's stream: nothing runs that is not recorded
                await asyncio.gather(generation, return_exceptions=True)
                raise
        holder = asyncio.ensure_future(self._hold(job, progress, stepped))
        left = asyncio.ensure_future(client_left.wait() if client_left is not None else asyncio.Future())
        try:
            await asyncio.wait({generation, holder, left}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            left.cancel()
            if not generation.done():  # canceled, left, or the lease lost
                generation.cancel()  # closes the worker's stream: the worker stops the job at its next step
            holder.cancel()
            await asyncio.gather(generation, holder, left, return_exceptions=True)
        if generation.cancelled():
            return await self._stopped(job, holder)
        # the last step came with the result (the holder stopped before recording it): written with the result
        last_step = (job.claim_owner or "", progress[-1]) if progress else None
        return await self._settle(job, generation, deadline_words, on_result, last_step)

    async def _stopped(self, job: Job, holder: asyncio.Future[Lease]) -> Ending:
        """The run was stopped before the worker finished: canceled (asked, or the client left), or lost."""
        if holder.cancelled() or holder.result() is Lease.CANCEL_REQUESTED:
            settled = await run_sync(mark_canceled, self.engine, job.id)
            logger.info("job %s canceled: its worker stream was closed", job.id)
            return Ending(settled.job.status)
        logger.warning("job %s: this holder lost its lease; the job's new holder finishes it", job.id)
        return Ending(LOST)

    async def _hold(self, job: Job, progress: list[tuple[int, int, str]], stepped: asyncio.Event) -> Lease:
        """Renew the lease (recording steps as they come) while it is held; returns how it ended. A store that
        does not answer for a whole lease means the lease may be gone: the job is given up (``LOST``)."""
        renewed = time.monotonic()
        while True:
            with anyio.move_on_after(self.renew_s):
                await stepped.wait()
            stepped.clear()
            try:
                lease = await self._renew(job, progress)
            except Exception:
                if time.monotonic() - renewed >= self.lease_s:
                    logger.exception("job %s: the store did not renew the lease for %g s; giving the job up",
                                     job.id, self.lease_s)
                    return Lease.LOST
                logger.warning("job %s: the store did not renew the lease; trying again", job.id, exc_info=True)
                continue
            renewed = time.monotonic()
            if lease is not Lease.HELD:
                return lease

    async def _renew(self, job: Job, progress: list[tuple[int, int, str]]) -> Lease:
        """Record the latest step and its worker (which renews the lease), or just renew it."""
        holder = job.claim_owner or ""
        if not progress:
            return await run_sync(renew, self.engine, job.id, holder, self.lease_s)
        seen = len(progress)
        step, total, worker = progress[-1]
        lease = await run_sync(partial(record_progress, self.engine, job.id, holder, step, total, self.lease_s,
                                       worker_id=worker))
        del progress[:seen]  # only once written: else the result's write records it
        return lease

    async def _settle(self, job: Job, generation: asyncio.Future[JobOutcome],
                      deadline_words: Callable[[DeadlinePassed], str],
                      on_result: Callable[[GenerationResult], None] | None,
                      last_step: tuple[str, Step] | None) -> Ending:
        """Write the finished generation's outcome: the images, or the error in words."""
        try:
            outcome = generation.result()
        except (JobRejected, DeadlinePassed) as error:
            words = deadline_words(error) if isinstance(error, DeadlinePassed) else str(error)
            settled = await run_sync(fail, self.engine, job.id, words)
            logger.info("job %s failed: %s", job.id, words)
            return Ending(settled.job.status, error=error)
        except Exception as error:
            logger.exception("job %s: unexpected error from the workers' queue", job.id)
            await run_sync(fail, self.engine, job.id, "Unexpected error while running the job; it is in the log.")
            return Ending(FAILED, error=error)
        result = outcome.result
        if on_result is not None:
            on_result(result)
        settled = await run_sync(lambda: finish(self.engine, job.id, stored_images(result), None,
                                                job_generation(outcome), thumbnails=on_result is None,
                                                last_step=last_step))
        if settled.written:
            logger.info("job %s succeeded on %s (%d images)", job.id, result.worker_id, len(result.images))
            return Ending(SUCCEEDED, result)
        logger.info("job %s was already %s: this run's result was discarded", job.id, settled.job.status)
        return Ending(settled.job.status, result)
