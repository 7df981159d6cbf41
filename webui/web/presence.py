"""Stop a job on the workers when the browser or ``gradio_client`` that asked for it has gone.

Gradio notices a client leaving (its event stream closes) and marks that client's running
events as no longer alive, but it lets their handlers run on: a portrait nobody will see
would keep a GPU to the end. And a client that joins the queue but never opens the event
stream (gone at once, or hostile) is never noticed at all. ``cancelled_when_client_leaves()``
watches the event the current handler serves and cancels the handler's task once it is dead,
or once its session has had no open event stream for ``LISTEN_GRACE`` seconds
(``EventStreams`` counts them; ``RequestGuard`` feeds it; the grace is ``--listen-grace``). That is what Gradio's own
``/cancel`` route does; the cancelled worker request then closes its connection, which makes
HAProxy (``option abortonclose``) and the worker drop the job.

This reads two details of Gradio 6's queue (pinned in requirements.txt): the name Gradio
gives an event's task (``"<session>_<fn><gradio-sep><event id>"``) and ``Queue.active_jobs``.
Outside Gradio's queue (a handler called directly) it watches nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

from gradio.context import LocalContext

from webui.contract import LISTEN_GRACE

logger = logging.getLogger(__name__)

TASK_NAME_SEPARATOR = "<gradio-sep>"
WATCH_INTERVAL = 0.25
"""Seconds between two looks at whether the client is still there."""


class EventStreams:
    """How many Gradio event streams (``queue/data``) each session has open, and since when none."""

    def __init__(self) -> None:
        self._open: Counter[str] = Counter()
        self._closed_at: dict[str, float] = {}

    def opened(self, session_hash: str) -> None:
        self._open[session_hash] += 1

    def closed(self, session_hash: str) -> None:
        self._open[session_hash] -= 1
        if self._open[session_hash] <= 0:
            del self._open[session_hash]
            self._closed_at[session_hash] = time.monotonic()
        if len(self._closed_at) > 10_000:  # forget the oldest sessions
            for session in sorted(self._closed_at, key=self._closed_at.__getitem__)[:5_000]:
                del self._closed_at[session]

    def silent_for(self, session_hash: str, since: float) -> float:
        """Seconds the session has had no open stream, counting from ``since`` at the earliest."""
        if self._open[session_hash] > 0:
            return 0.0
        return time.monotonic() - max(since, self._closed_at.get(session_hash, since))


def current_event() -> Any | None:
    """The Gradio queue event the running task serves, if any."""
    task = asyncio.current_task()
    blocks = LocalContext.blocks.get(None)
    if task is None or blocks is None or TASK_NAME_SEPARATOR not in task.get_name():
        return None
    event_id = task.get_name().split(TASK_NAME_SEPARATOR)[-1]
    queue = getattr(blocks, "_queue", None)
    for events in getattr(queue, "active_jobs", None) or []:
        for event in events or []:
            if getattr(event, "_id", None) == event_id:
                return event
    return None


@contextlib.asynccontextmanager
async def cancelled_when_client_leaves(
    streams: EventStreams, interval: float = WATCH_INTERVAL, grace: float = LISTEN_GRACE
) -> AsyncIterator[None]:
    """Within the block, the current task is cancelled once its client is gone (see the module)."""
    event = current_event()
    task = asyncio.current_task()
    if event is None or task is None:
        yield
        return
    since = time.monotonic()

    async def watch() -> None:
        while event.alive and streams.silent_for(event.session_hash, since) < grace:
            await asyncio.sleep(interval)
        why = "the client left" if not event.alive else f"no event stream open for {grace:g} s"
        logger.info("event %s: %s; cancelling its job", event._id, why)
        task.cancel()

    watcher = asyncio.create_task(watch(), name="client-presence")
    try:
        yield
    finally:
        watcher.cancel()
