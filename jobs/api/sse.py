"""A job's events as Server-Sent Events: read from the store's event log after ``Last-Event-ID``, so a client
that reconnects misses nothing and sees nothing twice; the stream ends after the terminal event.

Each stored event is one SSE event whose ``id`` is its sequence number: ``queued`` (with the queue position),
``started``, ``progress`` (``{"step", "steps"}``), then ``result``, ``failed`` or ``canceled`` (the job's public
JSON). Until a worker starts the job (queued, or claimed and waiting in the workers' queue), a changed place
(``queue_position``: jobs ahead, ``wait_s``: about how long; ``jobs.store.queue``) is sent as a ``queued`` event
without an id (it is not in the log), looked up at most every ``ESTIMATE_EVERY_S``. A ``: ping`` comment comes
after ``HEARTBEAT_S`` without an event, also while the store is slow to answer, so a client's short read timeout
tells a dead connection (its balancer cut off) from a job that is only slow.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
from anyio.to_thread import run_sync
from fastapi.sse import ServerSentEvent
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from jobs.api.views import PLACE, place, view
from jobs.contract import CANCELED, EVENT_PROGRESS, FAILED, PROCESSING, STARTING, SUCCEEDED
from jobs.errors import JobGone
from jobs.store import Event, Job, events_after, get, queue_estimate
from jobs.store.queue import waiting

logger = logging.getLogger(__name__)

POLL_S = 0.2
"""How often a stream looks for new events in the store (which every balancer host shares)."""
ESTIMATE_EVERY_S = 1.0
"""How often a waiting job's place is looked up again (and sent when it changed)."""
HEARTBEAT_S = 2.0
"""Longest silence on a stream: a ``: ping`` comment then (clients read with a timeout of a few seconds)."""
NAMES = {STARTING: "queued", PROCESSING: "started", SUCCEEDED: "result", FAILED: "failed", CANCELED: "canceled"}
"""A status event's SSE name."""


def last_event_id(header: str | None) -> int:
    """The sequence number to resume after: ``Last-Event-ID`` when it is one, else 0 (from the start)."""
    return int(header) if header is not None and header.strip().isdigit() else 0


def _sse(engine: Engine, job: Job, event: Event) -> ServerSentEvent:
    """One stored event as SSE (blocking: a terminal event carries the job's public JSON)."""
    if event.kind == EVENT_PROGRESS:
        return ServerSentEvent(id=str(event.seq), event="progress", data=event.data)
    status = event.data.get("status", "")
    data: dict[str, Any] = dict(event.data)
    if status == STARTING:
        data.update(place(queue_estimate(engine, job)))
    elif status in (SUCCEEDED, FAILED, CANCELED):
        data = view(engine, job).model_dump(mode="json")
    return ServerSentEvent(id=str(event.seq), event=NAMES.get(status, "status"), data=data)


def _next_batch(engine: Engine, job_id: str, after: int) -> tuple[Job, list[ServerSentEvent]]:
    """The job now and its events after ``after`` as SSE.

    The events are read before the job: a job's end writes its status and its terminal event together, so a
    terminal event read first finds the job ended (read the other way round, a job that ended in between would
    be sent as still running, with no results). A job found ended after no event was read has its events read
    once more: its terminal event may have come in between."""
    events = events_after(engine, job_id, after)
    job = get(engine, job_id)
    if job.terminal and not events:
        events = events_after(engine, job_id, after)
    return job, [_sse(engine, job, event) for event in events]


class _Pings:
    """The stream's heartbeat: a ``: ping`` once ``HEARTBEAT_S`` passed without anything sent, also while a read of
    the store is under way (a store cut off with its balancer host must not silence the stream: the ping is what
    lets the client, and that host's HAProxy through its ``tcp-ut``, tell the connection is dead)."""

    def __init__(self) -> None:
        self.last_sent = time.monotonic()

    def sent(self) -> None:
        self.last_sent = time.monotonic()

    def due(self) -> bool:
        return time.monotonic() - self.last_sent >= HEARTBEAT_S

    async def while_reading(self, box: list[Any], call: Callable[..., Any],
                            *args: Any) -> AsyncIterator[ServerSentEvent]:
        """Run ``call(*args)`` (blocking) in a thread, pinging while it runs; its result is put in ``box``."""
        reading = asyncio.ensure_future(run_sync(call, *args, abandon_on_cancel=True))
        try:
            while not reading.done():
                await asyncio.wait({reading}, timeout=max(0.0, HEARTBEAT_S - (time.monotonic() - self.last_sent)))
                if not reading.done() and self.due():
                    yield ServerSentEvent(comment="ping")
                    self.sent()
        finally:
            reading.cancel()
        box.append(reading.result())


async def job_events(engine: Engine, job_id: str, after: int) -> AsyncIterator[ServerSentEvent]:
    """Stream ``job_id``'s events after sequence number ``after`` until its terminal event (or until the store
    fails to answer: the client re-attaches, with ``Last-Event-ID``, where it does)."""
    try:
        async for event in _events(engine, job_id, after):
            yield event
    except SQLAlchemyError as error:
        logger.warning("job %s: its event stream ends, the job store does not answer (%s)", job_id,
                       type(error).__name__)


async def _events(engine: Engine, job_id: str, after: int) -> AsyncIterator[ServerSentEvent]:
    place_sent: dict[str, Any] | None = None
    pings = _Pings()
    looked_up = time.monotonic()
    while True:
        box: list[tuple[Job, list[ServerSentEvent]]] = []
        try:
            async for ping in pings.while_reading(box, _next_batch, engine, job_id, after):
                yield ping
        except JobGone:
            return
        job, events = box[0]
        for event in events:
            yield event
            pings.sent()
            after = int(event.id or after)
            if event.event == "queued":
                place_sent, looked_up = {key: event.data.get(key) for key in PLACE}, pings.last_sent
        if events and events[-1].event in ("result", "failed", "canceled"):
            return
        if job.terminal and not events:
            return  # resumed after the terminal event: nothing more will come
        if waiting(job) and after > 0 and time.monotonic() - looked_up >= ESTIMATE_EVERY_S:
            looked_up = time.monotonic()
            estimate: list[Any] = []
            async for ping in pings.while_reading(estimate, queue_estimate, engine, job):
                yield ping
            now = place(estimate[0])
            if now != place_sent and now["queue_position"] is not None:
                place_sent = now
                yield ServerSentEvent(event="queued", data={"status": job.status, **now})
                pings.sent()
        if pings.due():
            yield ServerSentEvent(comment="ping")
            pings.sent()
        await anyio.sleep(POLL_S)
