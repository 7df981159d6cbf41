"""Stop a job on the workers when the browser or ``gradio_client`` that asked for it has gone.

Gradio notices a client leaving (its event stream closes) and marks that client's running
events as no longer alive, but it lets their handlers run on: a portrait nobody will see
would keep a GPU to the end. ``cancelled_when_client_leaves()`` watches the event the
current handler serves and cancels the handler's task once it is dead, the same thing
Gradio's own ``/cancel`` route does; the cancelled worker request then closes its connection,
which makes HAProxy (``option abortonclose``) and the worker drop the job.

This reads two details of Gradio 6's queue (pinned in requirements.txt): the name Gradio
gives an event's task (``"<session>_<fn><gradio-sep><event id>"``) and ``Queue.active_jobs``.
Outside Gradio's queue (a handler called directly) it watches nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from gradio.context import LocalContext

logger = logging.getLogger(__name__)

TASK_NAME_SEPARATOR = "<gradio-sep>"
WATCH_INTERVAL = 0.25
"""Seconds between two looks at whether the client is still there."""


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
async def cancelled_when_client_leaves(interval: float = WATCH_INTERVAL) -> AsyncIterator[None]:
    """Within the block, the current task is cancelled once Gradio marks its event dead."""
    event = current_event()
    task = asyncio.current_task()
    if event is None or task is None:
        yield
        return

    async def watch() -> None:
        while event.alive:
            await asyncio.sleep(interval)
        logger.info("event %s: the client left; cancelling its job", event._id)
        task.cancel()

    watcher = asyncio.create_task(watch(), name="client-presence")
    try:
        yield
    finally:
        watcher.cancel()
