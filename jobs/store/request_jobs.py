"""Synchronous generations a worker records itself, one job per request the balancer let in.

The balancer gives every public request an id and keeps it when it replays the request on another worker (its
L7 retries after a worker died mid-job). That id, as the job's idempotency key, makes the replay the same job:
the next worker holds it (its attempt 2) instead of recording a second one.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, update
from sqlalchemy.exc import IntegrityError

from jobs.contract import ANONYMOUS, CLIENT_HELD, EVENT_STATUS, LEASE_SECONDS, PROCESSING, RETENTION
from jobs.store.engine import read, write
from jobs.store.events import append_event
from jobs.store.records import Job, utc_now
from jobs.store.schema import jobs
from jobs.store.submissions import by_key, submit_held

REQUEST_KEY = "request:"
"""How the idempotency key of a job recorded for a balancer's request begins (then the request's id: a uuid the
balancer drew, which no client can predict)."""


def hold_for_request(engine: Engine, input: dict[str, Any], holder: str, request_id: str,
                     lease_seconds: float = LEASE_SECONDS, *, retention: timedelta = RETENTION,
                     now: datetime | None = None) -> Job:
    """The anonymous job of the balancer's request ``request_id``, held for ``holder``'s client connection
    (``CLIENT_HELD``): recorded now (``submit_held``), or, when the request was replayed after its first worker
    died, the job recorded then, taken over while it is still ``processing`` (the next attempt). A job that
    ended meanwhile is returned as it is (its holder's outcome is then discarded: the first writer won)."""
    now = now or utc_now()
    key = REQUEST_KEY + request_id
    with write(engine) as connection:
        row = connection.execute(
            update(jobs).where(jobs.c.owner == ANONYMOUS, jobs.c.idempotency_key == key, jobs.c.status == PROCESSING)
            .values(claim_owner=CLIENT_HELD + holder, claim_expires_at=now + timedelta(seconds=lease_seconds),
                    attempts=jobs.c.attempts + 1, progress_step=None, progress_steps=None)
            .returning(*jobs.c)).one_or_none()
        if row is not None:
            append_event(connection, row.id, EVENT_STATUS, {"status": PROCESSING, "attempt": row.attempts}, now)
            return Job.from_row(row)
    try:
        return submit_held(engine, input, holder, lease_seconds, retention=retention, now=now, idempotency_key=key)
    except IntegrityError:
        with read(engine) as connection:  # recorded and ended before this attempt came
            earlier = by_key(connection, ANONYMOUS, key)
        if earlier is None:
            raise
        return earlier[0]
