"""How often Gradio's queue looks for work: Gradio's own pace while clients are about, a slow one when idle.

Gradio 6's queue looks for a new job every ``Queue.sleep_when_free`` seconds (1 ms on Linux) and
for progress to send every ``progress_update_sleep_when_free`` (10 ms), whether or not a client
is there: about 10 % of a core per idle web front on the 2-core development machine, all day
(``strace``: 1,500 ``epoll_wait`` a second). ``QueuePacer`` leaves Gradio's pace while requests
come and for ``idle_after`` seconds after the last one, then slows both loops to ``idle_poll``;
the next request (a page load, an API client's join) sets Gradio's pace again at once. So a job
that arrives after a quiet spell may wait up to ``idle_poll`` longer to start, once; every other
job starts as soon as Gradio would start it.
"""

from __future__ import annotations

import asyncio
import logging
import time

from gradio.queueing import Queue
from starlette.types import ASGIApp, Receive, Scope, Send

from webui.tasks import cancel_and_wait
from webui.traffic import UNCOUNTED

logger = logging.getLogger(__name__)

IDLE_AFTER = 5.0
"""Seconds without a request after which the queue slows down."""
IDLE_POLL = 0.02
"""Seconds between two looks of an idle queue (50 a second instead of 1,000)."""
CHECK_INTERVAL = 1.0
"""Seconds between two checks of whether the queue has gone idle."""


class QueuePacer:
    """Sets the pace of one Gradio queue's loops from the requests its web front receives."""

    def __init__(self, queue: Queue, idle_after: float = IDLE_AFTER, idle_poll: float = IDLE_POLL) -> None:
        if idle_after <= 0 or idle_poll <= 0:
            raise ValueError("idle_after and idle_poll must be positive")
        self.queue = queue
        self.idle_after = idle_after
        self.idle_poll = idle_poll
        self.active_polls = (queue.sleep_when_free, queue.progress_update_sleep_when_free)
        """Gradio's own pace (job, progress), kept while clients are about."""
        self.last_request = time.monotonic()
        self.idle = False
        self._task: asyncio.Task | None = None

    def request_came(self) -> None:
        """A client's request arrived: Gradio's pace, from this moment."""
        self.last_request = time.monotonic()
        if self.idle:
            self.idle = False
            self.queue.sleep_when_free, self.queue.progress_update_sleep_when_free = self.active_polls

    def check(self) -> None:
        """Slow down once no request came for ``idle_after`` s and no job waits or runs."""
        quiet = time.monotonic() - self.last_request >= self.idle_after
        if quiet and not self.idle and len(self.queue) == 0 and not any(self.queue.active_jobs):
            self.idle = True
            self.queue.sleep_when_free = self.queue.progress_update_sleep_when_free = self.idle_poll
            logger.debug("queue idle: looking for work every %.0f ms", self.idle_poll * 1000)

    def start(self) -> None:
        """Check every ``CHECK_INTERVAL`` s on the running event loop, until ``stop``."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="queue-pacer")

    async def stop(self) -> None:
        """Stop checking (the queue keeps the pace it has)."""
        await cancel_and_wait(self._task)
        self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(CHECK_INTERVAL)
            self.check()


class PaceQueue:
    """ASGI middleware: tells the pacer of every client request (probes and counters are not clients)."""

    def __init__(self, app: ASGIApp, pacer: QueuePacer) -> None:
        self.app = app
        self.pacer = pacer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in UNCOUNTED:
            self.pacer.request_came()
        await self.app(scope, receive, send)
