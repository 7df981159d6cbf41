"""Dispatchers taking jobs: an atomic claim with a lease, its renewal, progress reports.

``claim_next`` is one statement, ``UPDATE jobs ... WHERE seq = (SELECT ... LIMIT 1 FOR UPDATE SKIP LOCKED)
RETURNING``, the ``SELECT`` taking jobs in fair order across owners (``jobs.store.fair_share``): on PostgreSQL
two dispatchers (any hosts) skip each other's locked row and take different jobs;
on SQLite the statement runs in a ``BEGIN IMMEDIATE`` transaction (the database's one write lock), which
serializes claims across processes (SQLite ignores ``FOR UPDATE``). A claim lasts ``lease_seconds``; a
dispatcher that dies stops renewing, and the job is claimable again when the lease expires.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, Connection, Engine, and_, func, or_, update

from jobs.contract import (
    CANCELED,
    CLIENT_HELD,
    EVENT_PROGRESS,
    EVENT_STATUS,
    LEASE_SECONDS,
    PROCESSING,
    STARTING,
    WEBHOOK_COMPLETED,
    WEBHOOK_START,
)
from jobs.store.engine import write
from jobs.store.events import append_event
from jobs.store.fair_share import in_fair_order
from jobs.store.outbox import enqueue, enqueue_progress
from jobs.store.records import Job, Lease, utc_now
from jobs.store.schema import jobs

logger = logging.getLogger(__name__)


def claimable(now: datetime) -> ColumnElement[bool]:
    """Jobs a dispatcher may take: queued, or held by a lease that expired; never one asked to cancel, never one
    held for a client's connection (``CLIENT_HELD``)."""
    return and_(jobs.c.cancel_requested_at.is_(None),
                or_(jobs.c.status == STARTING, and_(jobs.c.status == PROCESSING, jobs.c.claim_expires_at < now,
                                                     ~jobs.c.claim_owner.startswith(CLIENT_HELD))))


def claim_next(engine: Engine, dispatcher: str, lease_seconds: float = LEASE_SECONDS,
               now: datetime | None = None) -> Job | None:
    """Take the next claimable job in fair order (the least-served owner's oldest) for ``dispatcher`` (status
    ``processing``, lease until now + lease_seconds); None when there is none. Never hands one job to two
    dispatchers whose leases are both live: the ``UPDATE`` takes it only while it is still claimable."""
    now = now or utc_now()
    next_seq = (in_fair_order(claimable(now), now).limit(1)
                .with_for_update(of=jobs, skip_locked=True).scalar_subquery())
    claim = (update(jobs).where(jobs.c.seq == next_seq, claimable(now))
             .values(status=PROCESSING, claim_owner=dispatcher, claim_expires_at=now + timedelta(seconds=lease_seconds),
                     attempts=jobs.c.attempts + 1, started_at=func.coalesce(jobs.c.started_at, now),
                     progress_step=None, progress_steps=None)  # not on a worker yet (jobs.store.queue)
             .returning(*jobs.c))
    with write(engine) as connection:
        _cancel_abandoned(connection, now)
        row = connection.execute(claim).one_or_none()
        if row is None:
            return None
        append_event(connection, row.id, EVENT_STATUS, {"status": PROCESSING, "attempt": row.attempts}, now)
        enqueue(connection, Job.from_row(row), WEBHOOK_START, now)
    if row.attempts > 1:
        logger.info("job %s claimed again by %s (attempt %d): its earlier lease expired", row.id, dispatcher,
                    row.attempts)
    return Job.from_row(row)


def _cancel_abandoned(connection: Connection, now: datetime) -> None:
    """Finish as ``canceled`` the jobs whose holder's lease expired (it died) that were asked to cancel, or held
    for a client's connection (which ended with the holder: nobody waits for the result)."""
    ended = connection.execute(
        update(jobs).where(jobs.c.status == PROCESSING, jobs.c.claim_expires_at < now,
                           or_(jobs.c.cancel_requested_at.is_not(None), jobs.c.claim_owner.startswith(CLIENT_HELD)))
        .values(status=CANCELED, completed_at=now, claim_owner=None, claim_expires_at=None)
        .returning(*jobs.c)).all()
    for row in ended:
        append_event(connection, row.id, EVENT_STATUS, {"status": CANCELED}, now)
        enqueue(connection, Job.from_row(row), WEBHOOK_COMPLETED, now)


def renew(engine: Engine, job_id: str, dispatcher: str, lease_seconds: float = LEASE_SECONDS,
          now: datetime | None = None) -> Lease:
    """Extend ``dispatcher``'s lease on ``job_id``; says whether it still holds it and whether to cancel."""
    now = now or utc_now()
    with write(engine) as connection:
        return _extend(connection, job_id, dispatcher, now + timedelta(seconds=lease_seconds))[0]


def record_progress(engine: Engine, job_id: str, dispatcher: str, step: int, steps: int,
                    lease_seconds: float = LEASE_SECONDS, now: datetime | None = None,
                    worker_id: str | None = None) -> Lease:
    """Record a denoising step (and an event for it, naming ``worker_id`` when given) from the job's holder;
    renews its lease too. A dispatcher that lost the job records nothing (``Lease.LOST``)."""
    now = now or utc_now()
    with write(engine) as connection:
        return record_step(connection, job_id, dispatcher, (step, steps, worker_id), lease_seconds, now)


Step = tuple[int, int, str | None]
"""A denoising step as the worker reports it: (step, steps, worker_id)."""


def record_step(connection: Connection, job_id: str, dispatcher: str, step: Step, lease_seconds: float,
                now: datetime) -> Lease:
    """``record_progress`` inside the caller's transaction."""
    number, steps, worker_id = step
    lease, job = _extend(connection, job_id, dispatcher, now + timedelta(seconds=lease_seconds),
                         progress_step=number, progress_steps=steps)
    if job is not None:
        data = {"step": number, "steps": steps, **({"worker_id": worker_id} if worker_id else {})}
        seq = append_event(connection, job_id, EVENT_PROGRESS, data, now)
        enqueue_progress(connection, job, now, seq)
    return lease


def _extend(connection: Connection, job_id: str, dispatcher: str, until: datetime,
            **values: int) -> tuple[Lease, Job | None]:
    """Extend the holder's lease (and set ``values``): how the lease stands, and the job (None when lost)."""
    row = connection.execute(
        update(jobs).where(jobs.c.id == job_id, jobs.c.claim_owner == dispatcher, jobs.c.status == PROCESSING)
        .values(claim_expires_at=until, **values).returning(*jobs.c)).one_or_none()
    if row is None:
        return Lease.LOST, None
    return (Lease.HELD if row.cancel_requested_at is None else Lease.CANCEL_REQUESTED), Job.from_row(row)
