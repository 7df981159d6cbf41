"""A job's event log: appended in the transaction that changes the job, read after a sequence number (an SSE
stream that reconnects with ``Last-Event-ID: n`` reads ``events_after(job, n)`` and misses nothing)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, insert, select, update

from jobs.store.engine import read
from jobs.store.records import Event
from jobs.store.schema import job_events, jobs


def append_event(connection: Connection, job_id: str, kind: str, data: dict[str, Any], now: datetime) -> int:
    """Append an event to ``job_id``'s log inside the caller's write transaction; returns its sequence number.

    The number comes from the job's own counter (an UPDATE, so two writers of one job take turns on its row).
    """
    seq = connection.execute(update(jobs).where(jobs.c.id == job_id)
                             .values(last_event_seq=jobs.c.last_event_seq + 1)
                             .returning(jobs.c.last_event_seq)).scalar_one()
    connection.execute(insert(job_events).values(job_id=job_id, seq=seq, kind=kind, data=data, at=now))
    return seq


def events_after(engine: Engine, job_id: str, after: int = 0, limit: int = 1000) -> list[Event]:
    """``job_id``'s events with a sequence number above ``after``, oldest first, at most ``limit``."""
    query = (select(job_events).where(job_events.c.job_id == job_id, job_events.c.seq > after)
             .order_by(job_events.c.seq).limit(limit))
    with read(engine) as connection:
        return [Event(**row._mapping) for row in connection.execute(query)]
