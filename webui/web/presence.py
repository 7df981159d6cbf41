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

This reads details of Gradio 6's queue (pinned in requirements.txt): the name Gradio gives an
event's task (``"<session>_<fn><gradio-sep><event id>"``), ``Queue.active_jobs`` and the maps
``event_session`` reads. Outside Gradio's queue (a handler called directly) it watches nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

from gradio.context import LocalContext

from webui.contract import LISTEN_GRACE
from webui.web.bounded import BoundedMap

logger = logging.getLogger(__name__)

TASK_NAME_SEPARATOR = "<gradio-sep>"
WATCH_INTERVAL = 0.25
"""Seconds between two looks at whether the client is still there."""
MAX_SESSIONS = 10_000
"""Sessions ``EventStreams`` holds, open and recently closed each."""
MAX_SESSION_BYTES = 4 * 1024 * 1024
"""Bytes of session hashes ``EventStreams`` holds, open and recently closed each."""
FORGET_AFTER = 600.0
"""Seconds ``EventStreams`` remembers when a session's last stream closed."""


class EventStreams:
    """How many Gradio event streams (``queue/data``) each session has open, and since when none.

    Session hashes are the clients' to choose, so both maps are bounded: at most ``max_sessions``
    sessions and about ``max_bytes`` bytes with open streams (``opened`` refuses more), and the
    same for sessions whose streams closed, forgotten ``forget_after`` seconds later or, oldest
    first, when a bound is passed. ``forget_after`` must be longer than the listen grace.
    """

    def __init__(self, max_sessions: int = MAX_SESSIONS, max_bytes: int = MAX_SESSION_BYTES,
                 forget_after: float = FORGET_AFTER) -> None:
        self.max_sessions = max_sessions
        self.max_bytes = max_bytes
        self._open: Counter[str] = Counter()
        self._open_bytes = 0
        self._closed_at: BoundedMap[float] = BoundedMap(max_sessions, max_bytes, forget_after)

    def opened(self, session_hash: str) -> bool:
        """Count one more open stream; False (nothing counted) when the bounds leave no room for it."""
        if session_hash not in self._open:
            size = sys.getsizeof(session_hash)
            if len(self._open) >= self.max_sessions or self._open_bytes + size > self.max_bytes:
                return False
            self._open_bytes += size
        self._open[session_hash] += 1
        return True

    def closed(self, session_hash: str) -> None:
        """Count one stream closed (one that ``opened`` counted)."""
        self._open[session_hash] -= 1
        if self._open[session_hash] <= 0:
            del self._open[session_hash]
            self._open_bytes -= sys.getsizeof(session_hash)
            self._closed_at[session_hash] = time.monotonic()

    def silent_for(self, session_hash: str, since: float) -> float:
        """Seconds the session has had no open stream, counting from ``since`` at the earliest."""
        if self._open.get(session_hash, 0) > 0:
            return 0.0
        return time.monotonic() - max(since, self._closed_at.get(session_hash, since))

    def __len__(self) -> int:
        """Sessions held (with open streams or recently closed ones)."""
        return len(self._open) + len(self._closed_at)

    @property
    def nbytes(self) -> int:
        """Bytes the session hashes held take (as ``sys.getsizeof`` counts them)."""
        return self._open_bytes + self._closed_at.nbytes


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


def event_session(queue: Any, event_id: str) -> str:
    """The session whose messages Gradio's curl-style stream (``GET call/…/<event id>``) relays,
    found as that route finds it: the event's own session, else the session still holding the
    id, else the id itself (a ``call`` without a session hash of its own)."""
    event = getattr(queue, "event_ids_to_events", {}).get(event_id)
    if event is not None:
        return event.session_hash
    pending = getattr(queue, "pending_event_ids_session", {})
    return next((session for session, ids in pending.items() if event_id in ids), event_id)


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


async def client_listening(streams: EventStreams, interval: float = WATCH_INTERVAL,
                           grace: float = LISTEN_GRACE) -> bool:
    """Whether the current event's client has an event stream open, waiting up to ``grace`` seconds for one (a page
    opens it as it joins); True outside Gradio's queue. A page's job outlives its client, so it is recorded only
    for a client that listens: one that joins and never listens gets none."""
    event = current_event()
    if event is None:
        return True
    since = time.monotonic()
    while event.alive:
        silent = streams.silent_for(event.session_hash, since)
        if silent == 0.0:
            return True
        if silent >= grace:
            break
        await asyncio.sleep(interval)
    logger.info("event %s: its client is not listening; no job recorded", event._id)
    return False
