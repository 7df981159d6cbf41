"""The dispatcher: ``slots`` loops that each claim the next queued job in fair order across owners
(``claim_next``), run it on the workers' queue, and write
its outcome (``jobs.running.HeldRuns``). The store is the only state: a dispatcher that dies mid-job loses nothing
(its lease runs out and any dispatcher, on any host, takes the job again) and a result is written once (``finish``:
first writer wins).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import timedelta

import anyio
from anyio.to_thread import run_sync
from sqlalchemy import Engine

from jobs.contract import LEASE_SECONDS
from jobs.metrics import JobsMetrics
from jobs.running import HeldRuns, holder_name
from jobs.store import Job, claim_next
from jobs.store.records import utc_now
from webui import trace
from webui.web.worker_client import WorkerClient

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


class Dispatcher:
    """Claims jobs from the store and runs them on ``client`` (the workers' queue), ``options.slots`` at once."""

    def __init__(self, engine: Engine, client: WorkerClient, options: DispatchOptions | None = None,
                 metrics: JobsMetrics | None = None) -> None:
        self.engine = engine
        self.client = client
        self.options = options or DispatchOptions()
        self.name = holder_name()
        self.runs = HeldRuns(engine, client, self.options.lease_s, self.options.renew_s, metrics)
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
        """Run one claimed job to its outcome (or until its lease ends); it may wait for a worker until its
        deadline (``job_timeout`` after its acceptance)."""
        deadline = time.monotonic() + (job.created_at + self.options.job_timeout - utc_now()).total_seconds()
        with trace.bound(trace.new_request_id(), job.id):  # its log lines, HAProxy's and the worker's name the job
            logger.info("job %s: claimed (attempt %d)", job.id, job.attempts)
            await self.runs.run(job, deadline)
