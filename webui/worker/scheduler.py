"""The worker's job scheduler: one generation at a time in its own thread, a bounded FIFO behind it."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

from webui.trace import in_context
from webui.worker.errors import JobCancelled, QueueFull

T = TypeVar("T")

ADMIT_GRACE = 0.05
"""Seconds a job that finds no place waits for one before it is refused. HAProxy frees a worker's slot the moment a
client leaves and may send the next job at once; the worker hears of the departure a few event-loop turns later."""
GRACE_POLL = 0.002
"""Seconds between two looks for a place during ``ADMIT_GRACE``."""


class Job(Generic[T]):
    """One admitted job: its place in the queue, its cancel switch and its outcome."""

    def __init__(self) -> None:
        self.cancel = threading.Event()
        """Set when the client is gone; the generation thread stops at the next step."""
        self.abandoned = asyncio.Event()
        self.running = False
        self.task: asyncio.Task[T] | None = None

    def abandon(self) -> str:
        """The client went away: drop the job if it waits, stop it at the next step if it runs.

        Returns the request's outcome for the log: ``dropped`` (it waited) or ``cancelled``.
        """
        self.cancel.set()
        self.abandoned.set()
        return "cancelled" if self.running else "dropped"


class JobScheduler:
    """Runs one job at a time in a dedicated thread; at most ``queue_size`` more wait (FIFO).

    A job whose client left no longer takes a place: a running one stops at its next step, a waiting one leaves the
    queue, and HAProxy, which freed the worker's slot when the client went, may already send the next job. That job
    may come before the worker has heard the client go: ``admit`` gives it ``ADMIT_GRACE`` to find its place.
    """

    def __init__(self, queue_size: int) -> None:
        self.queue_size = queue_size
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="generation")
        self._slot = asyncio.Lock()
        self._admitted = 0
        self._current: Job | None = None
        self._jobs: set[Job] = set()
        self._seconds_per_job = 1.0

    @property
    def busy(self) -> bool:
        """Whether a job is running."""
        return self._current is not None

    @property
    def queue_depth(self) -> int:
        """Jobs admitted and waiting behind the running one."""
        return self._admitted - int(self.busy)

    def retry_after(self) -> int:
        """Seconds until a slot is likely free (for ``Retry-After``), from recent job durations."""
        return max(1, min(60, math.ceil(self._seconds_per_job * (self.queue_depth + 1))))

    async def admit(self, work: Callable[[threading.Event], T], grace: float = ADMIT_GRACE) -> Job[T]:
        """``submit``, waiting up to ``grace`` seconds for a place before ``QueueFull`` (see ``ADMIT_GRACE``)."""
        deadline = time.monotonic() + grace
        while True:
            try:
                return self.submit(work)
            except QueueFull:
                if time.monotonic() >= deadline:
                    raise
                await asyncio.sleep(GRACE_POLL)

    def submit(self, work: Callable[[threading.Event], T]) -> Job[T]:
        """Admit ``work(cancel_event)`` or raise ``QueueFull``; it starts when the slot is free. A job whose client
        left (running until its next step, or about to leave the queue) takes no place."""
        if sum(not job.cancel.is_set() for job in self._jobs) >= self.queue_size + 1:
            raise QueueFull(
                f"The worker is busy: one job is running and {self.queue_depth} are waiting (the most it queues). "
                "Retry later or on another worker.",
                retry_after=self.retry_after(),
            )
        job: Job[T] = Job()
        self._admitted += 1
        self._jobs.add(job)
        job.task = asyncio.ensure_future(self._run(job, work))
        job.task.add_done_callback(self._mark_seen)
        return job

    @staticmethod
    def _mark_seen(task: asyncio.Task) -> None:
        """Mark a job's exception as handled: when its client left, nobody awaits it any more
        (the service has logged real failures; ``JobCancelled`` is expected)."""
        if not task.cancelled():
            task.exception()

    async def _run(self, job: Job[T], work: Callable[[threading.Event], T]) -> T:
        try:
            await self._wait_for_slot(job)
            try:
                self._current, job.running = job, True
                started = time.perf_counter()
                result = await asyncio.get_running_loop().run_in_executor(self.executor, in_context(work, job.cancel))
                self._seconds_per_job = 0.7 * self._seconds_per_job + 0.3 * (time.perf_counter() - started)
                return result
            finally:
                self._current, job.running = None, False
                self._slot.release()
        finally:
            self._admitted -= 1
            self._jobs.discard(job)

    async def _wait_for_slot(self, job: Job) -> None:
        """Take the slot, or raise ``JobCancelled`` if the job is abandoned first."""
        acquire = asyncio.ensure_future(self._slot.acquire())
        gone = asyncio.ensure_future(job.abandoned.wait())
        acquired = False
        try:
            await asyncio.wait({acquire, gone}, return_when=asyncio.FIRST_COMPLETED)
            acquired = acquire.done() and not job.abandoned.is_set()
        finally:
            gone.cancel()
            if not acquired:
                if acquire.done() and not acquire.cancelled():
                    self._slot.release()
                else:
                    acquire.cancel()  # asyncio.Lock hands the slot on if it was just granted to us
        if not acquired:
            raise JobCancelled("the client went away while the job was waiting")

    def close(self) -> None:
        """Stop all jobs (at their next step) and the thread; for shutdown."""
        for job in list(self._jobs):
            job.abandon()
        self.executor.shutdown(wait=False, cancel_futures=True)

