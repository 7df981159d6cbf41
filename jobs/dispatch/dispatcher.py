"""The dispatcher: ``slots`` loops that each claim the oldest queued job, run it on the workers' queue, and write
its outcome. The store is the only state: a dispatcher that dies mid-job loses nothing (its lease runs out and
any dispatcher, on any host, takes the job again) and a result is written once (``finish``: first writer wins).

While a job runs, its slot renews the lease every ``renew_s`` and records each denoising step (which renews it
too). A renewal that says the job was canceled stops the stream to the worker — the worker cancels a job whose
client left, so its GPU is free at its next step — and marks the job ``canceled``; one that says the lease was
lost stops it and writes nothing.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta

import anyio
from anyio.to_thread import run_sync
from sqlalchemy import Engine

from jobs.contract import LEASE_SECONDS
from jobs.dispatch.attempts import DeadlinePassed, run_until_deadline
from jobs.store import Image, Job, Lease, claim_next, fail, finish, mark_canceled, record_progress, renew
from jobs.store.records import utc_now
from webui.schema import GenerationRequest, GenerationResult
from webui.web.worker_client import JobRejected, WorkerClient

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DispatchOptions:
    slots: int = 1
    """Jobs run at once by this dispatcher (one per worker it should keep busy)."""
    lease_s: float = LEASE_SECONDS
    renew_s: float = 0.5
    """How often a running job's lease is renewed, which is also how soon a cancel is seen."""
    idle_poll_s: float = 1.0
    """How often an idle slot looks for jobs that other hosts accepted (this host's own wake it at once)."""
    job_timeout: timedelta = timedelta(minutes=15)
    """A job's deadline, from its acceptance: until then a job waits for a worker instead of failing."""


def dispatcher_name() -> str:
    """This process's name in the store's claims: host, pid, and a random tag."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def stored_images(result: GenerationResult) -> list[Image]:
    """The worker's base64 PNGs as the store's images."""
    return [Image(base64.b64decode(data), "image/png", result.params.width, result.params.height)
            for data in result.images]


class Dispatcher:
    """Claims jobs from the store and runs them on ``client`` (the workers' queue), ``options.slots`` at once."""

    def __init__(self, engine: Engine, client: WorkerClient, options: DispatchOptions | None = None) -> None:
        self.engine = engine
        self.client = client
        self.options = options or DispatchOptions()
        self.name = dispatcher_name()
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """A job was accepted on this host: idle slots look for it now (call from the event loop)."""
        self._wake.set()

    async def run(self) -> None:
        """Run every slot until cancelled."""
        logger.info("dispatcher %s: %d slots, lease %g s", self.name, self.options.slots, self.options.lease_s)
        async with anyio.create_task_group() as group:
            for _ in range(self.options.slots):
                group.start_soon(self._slot)

    async def _slot(self) -> None:
        while True:
            try:
                job = await run_sync(claim_next, self.engine, self.name, self.options.lease_s)
            except Exception:
                logger.exception("dispatcher: the store did not answer a claim; trying again")
                job = None
            if job is None:
                self._wake.clear()
                with anyio.move_on_after(self.options.idle_poll_s):
                    await self._wake.wait()
                continue
            try:
                await self.run_job(job)
            except Exception:
                logger.exception("dispatcher: job %s ended with an unexpected error; its lease will expire", job.id)

    async def run_job(self, job: Job) -> None:
        """Run one claimed job to its outcome (or until its lease ends)."""
        fields = {name: value for name, value in job.input.items() if name in GenerationRequest.model_fields}
        deadline = time.monotonic() + (job.created_at + self.options.job_timeout - utc_now()).total_seconds()
        progress: list[tuple[int, int]] = []
        stepped = asyncio.Event()

        def on_progress(step: int, total: int, _worker: str) -> None:
            progress.append((step, total))
            stepped.set()

        generation = asyncio.ensure_future(run_until_deadline(self.client, fields, deadline, on_progress))
        holder = asyncio.ensure_future(self._hold(job.id, progress, stepped))
        await asyncio.wait({generation, holder}, return_when=asyncio.FIRST_COMPLETED)
        if not generation.done():  # the lease ended: canceled, or lost to another dispatcher
            generation.cancel()  # closes the worker's stream: the worker stops the job at its next step
            await asyncio.gather(generation, return_exceptions=True)
            if holder.result() is Lease.CANCEL_REQUESTED:
                await run_sync(mark_canceled, self.engine, job.id)
                logger.info("job %s canceled: its worker stream was closed", job.id)
            else:
                logger.warning("job %s: this dispatcher lost its lease; the job's new holder finishes it", job.id)
            return
        holder.cancel()
        await asyncio.gather(holder, return_exceptions=True)
        await self._settle(job, generation)

    async def _hold(self, job_id: str, progress: list[tuple[int, int]], stepped: asyncio.Event) -> Lease:
        """Renew the lease (recording steps as they come) while it is held; returns how it ended. A store that
        does not answer for a whole lease means the lease may be gone: the job is given up (``LOST``)."""
        renewed = time.monotonic()
        while True:
            with anyio.move_on_after(self.options.renew_s):
                await stepped.wait()
            stepped.clear()
            try:
                lease = await self._renew(job_id, progress)
            except Exception:
                if time.monotonic() - renewed >= self.options.lease_s:
                    logger.exception("job %s: the store did not renew the lease for %g s; giving the job up",
                                     job_id, self.options.lease_s)
                    return Lease.LOST
                logger.warning("job %s: the store did not renew the lease; trying again", job_id, exc_info=True)
                continue
            renewed = time.monotonic()
            if lease is not Lease.HELD:
                return lease

    async def _renew(self, job_id: str, progress: list[tuple[int, int]]) -> Lease:
        """Record the latest step (which renews the lease), or just renew it."""
        if not progress:
            return await run_sync(renew, self.engine, job_id, self.name, self.options.lease_s)
        step, total = progress[-1]
        progress.clear()
        return await run_sync(record_progress, self.engine, job_id, self.name, step, total, self.options.lease_s)

    async def _settle(self, job: Job, generation: asyncio.Future[GenerationResult]) -> None:
        """Write the finished generation's outcome: the images, or the error in words."""
        try:
            result = generation.result()
        except (JobRejected, DeadlinePassed) as error:
            await run_sync(fail, self.engine, job.id, str(error))
            logger.info("job %s failed: %s", job.id, error)
            return
        except Exception:
            logger.exception("job %s: unexpected error from the workers' queue", job.id)
            await run_sync(fail, self.engine, job.id, "Unexpected error while running the job; it is in the log.")
            return
        settled = await run_sync(finish, self.engine, job.id, stored_images(result))
        if settled.written:
            logger.info("job %s succeeded on %s (%d images)", job.id, result.worker_id, len(result.images))
        else:
            logger.info("job %s was already %s: this run's result was discarded", job.id, settled.job.status)
