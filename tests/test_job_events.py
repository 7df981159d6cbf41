"""A job's event stream (``jobs.api.sse.job_events``) against a job that ends while the stream reads it, on
SQLite and on a real PostgreSQL server: the terminal event carries the ended job (its status, results and the
worker's account), never the job as it was a moment before.

The end is written by a second connection right after the stream's first query of a batch (an SQLAlchemy
cursor event on the real engine): the moment a dispatcher's ``finish`` or ``mark_canceled`` lands between the
stream's reads. Run under the cluster lock (the PostgreSQL half starts a server):
``flock /tmp/ph-cluster.lock python -m pytest -q tests/test_job_events.py``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import pytest
from sqlalchemy import Engine, event

from jobs.api.sse import HEARTBEAT_S, POLL_S, job_events
from jobs.store import Image, Lease, claim_next, events_after, finish, mark_canceled, record_progress, submit

GENERATION = {"worker_id": "node1", "model": "demo", "seed": 7}


def stream_with_an_end_between_reads(engine: Engine, end: Callable[[str], object]) -> list:
    """The SSE events of a running job (from its newest event on) whose end ``end(job_id)`` is written by another
    connection just after the stream's first query."""
    job = submit(engine, {"prompt": "a portrait that ends mid-read", "seed": 7})[0]
    claim_next(engine, "d1")
    assert record_progress(engine, job.id, "d1", 1, 4) is Lease.HELD
    newest = events_after(engine, job.id)[-1].seq
    armed = [True]

    def end_once(_connection: object, _cursor: object, statement: str, *_: object) -> None:
        if armed[0] and statement.lstrip().upper().startswith("SELECT"):
            armed[0] = False
            end(job.id)

    async def collect() -> list:
        return [sse async for sse in job_events(engine, job.id, newest)]

    event.listen(engine, "after_cursor_execute", end_once)
    try:
        streamed = asyncio.run(asyncio.wait_for(collect(), timeout=30))
    finally:
        event.remove(engine, "after_cursor_execute", end_once)
    assert not armed[0], "the job's end was never written"
    return streamed


def test_a_job_that_succeeds_between_two_reads_streams_its_results(job_store: Engine) -> None:
    streamed = stream_with_an_end_between_reads(
        job_store, lambda job_id: finish(job_store, job_id, [Image(b"png", width=8, height=8)],
                                         generation=GENERATION))
    assert [sse.event for sse in streamed] == ["result"]
    data = streamed[0].data
    assert data["status"] == "succeeded" and len(data["results"]) == 1, data
    assert data["generation"] == GENERATION


def test_a_job_canceled_between_two_reads_streams_canceled(job_store: Engine) -> None:
    streamed = stream_with_an_end_between_reads(job_store, lambda job_id: mark_canceled(job_store, job_id))
    assert [sse.event for sse in streamed] == ["canceled"]
    assert streamed[0].data["status"] == "canceled"


@pytest.mark.parametrize("after", [0, None])
def test_a_stream_resumed_after_the_end_sends_nothing_more(job_store: Engine, after: int | None) -> None:
    job = submit(job_store, {"prompt": "a finished portrait", "seed": 1})[0]
    claim_next(job_store, "d1")
    finish(job_store, job.id, [Image(b"png", width=8, height=8)])
    last = events_after(job_store, job.id)[-1].seq

    async def collect() -> list:
        return [sse async for sse in job_events(job_store, job.id, last if after is None else after)]

    streamed = asyncio.run(asyncio.wait_for(collect(), timeout=30))
    assert [sse.event for sse in streamed] == ([] if after is None else ["queued", "started", "result"])


def test_a_quiet_stream_sends_a_ping_within_the_heartbeat(job_store: Engine) -> None:
    """A queued job with no dispatcher says nothing new: the stream still sends ``: ping`` every ``HEARTBEAT_S``,
    so a client's read timeout of a few seconds never fires on a live stream."""
    job = submit(job_store, {"prompt": "a portrait that waits", "seed": 3})[0]

    async def first_three() -> list[tuple[float, object]]:
        got, started = [], time.monotonic()
        async for sse in job_events(job_store, job.id, 0):
            got.append((time.monotonic() - started, sse))
            if len(got) == 3:
                return got
        return got

    got = asyncio.run(asyncio.wait_for(first_three(), timeout=30))
    assert [sse.event for _, sse in got] == ["queued", None, None]
    assert [sse.comment for _, sse in got[1:]] == ["ping", "ping"]
    assert got[2][0] - got[1][0] >= HEARTBEAT_S - POLL_S  # a ping per quiet heartbeat, not a stream of them


def test_a_stream_pings_while_the_store_is_slow_to_answer(job_store: Engine) -> None:
    """A store that takes longer than the heartbeat to answer (its balancer host cut off from it) does not silence
    the stream: the pings still come every ``HEARTBEAT_S`` while the read is under way, so the client and HAProxy
    (``tcp-ut``) can still tell whether the connection to the client is alive."""
    job = submit(job_store, {"prompt": "a portrait on a slow store", "seed": 4})[0]
    released = threading.Event()

    def slow_statement(*_: object) -> None:
        released.wait(3 * HEARTBEAT_S)

    async def during_a_slow_read() -> tuple[object, list[tuple[float, object]]]:
        stream = job_events(job_store, job.id, 0)
        first = await anext(stream)  # read at full speed
        event.listen(job_store, "before_cursor_execute", slow_statement)
        got, started = [], time.monotonic()
        async for sse in stream:
            got.append((time.monotonic() - started, sse))
            break
        await stream.aclose()
        return first, got

    try:
        first, got = asyncio.run(asyncio.wait_for(during_a_slow_read(), timeout=30))
    finally:
        event.remove(job_store, "before_cursor_execute", slow_statement)
        released.set()
    assert first.event == "queued"
    assert [sse.comment for _, sse in got] == ["ping"]
    assert got[0][0] <= HEARTBEAT_S + 0.5  # within the read, which takes 3 heartbeats (a statement each)
