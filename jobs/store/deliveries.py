"""The webhook delivery queue and its log: due deliveries claimed with a lease, each attempt recorded with
the next one's time, a job's deliveries read back with their attempts.

``claim_due`` selects the oldest due deliveries ``FOR UPDATE SKIP LOCKED`` and marks them claimed in the same
transaction, so services on several hosts sharing one PostgreSQL take different deliveries, and on SQLite the
write lock serializes them. (Two statements: PostgreSQL may run an ``IN (SELECT ... LIMIT n)`` subquery of an
UPDATE more than once and claim more than ``n``.) A claim lasts ``DELIVERY_LEASE_SECONDS`` (longer than an
attempt can take): a service that dies while sending is replaced after it; one that lives records the attempt
and lets go.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, Engine, and_, case, func, insert, or_, select, update

from jobs.contract import DELIVERY_LEASE_SECONDS
from jobs.errors import DeliveryInProgress, DeliveryNotFound
from jobs.store.engine import read, write
from jobs.store.outbox import DELIVERED, GAVE_UP, PENDING, REFUSED
from jobs.store.records import utc_now
from jobs.store.schema import webhook_attempts, webhook_deliveries

logger = logging.getLogger(__name__)

deliveries = webhook_deliveries


@dataclass(frozen=True)
class LoggedAttempt:
    """One attempt of a delivery, as the log keeps it."""

    number: int
    at: datetime
    outcome: str
    """delivered, failed or refused."""
    status_code: int | None
    error: str | None
    latency_ms: float
    redelivery: bool = False


@dataclass(frozen=True)
class QueuedDelivery:
    """A delivery as the queue holds it (claimed by the caller when it came from ``claim_due``/``claim_one``)."""

    id: str
    job_id: str
    event: str
    url: str
    body: str
    created_at: datetime
    status: str
    retried: bool
    attempts: int
    first_attempt_at: datetime | None
    next_attempt_at: datetime | None
    log: list[LoggedAttempt] = field(default_factory=list)


def _delivery(row: object, log: list[LoggedAttempt] | None = None) -> QueuedDelivery:
    fields = row._mapping  # type: ignore[attr-defined]
    return QueuedDelivery(**{name: fields[name] for name in QueuedDelivery.__dataclass_fields__ if name != "log"},
                          log=log or [])


def _free(now: datetime) -> ColumnElement[bool]:
    return or_(deliveries.c.claim_expires_at.is_(None), deliveries.c.claim_expires_at < now)


def _due(now: datetime) -> ColumnElement[bool]:
    return and_(deliveries.c.status == PENDING, deliveries.c.next_attempt_at <= now, _free(now))


def claim_due(engine: Engine, owner: str, now: datetime | None = None, limit: int = 32,
              lease_seconds: float = DELIVERY_LEASE_SECONDS) -> list[QueuedDelivery]:
    """Claim for ``owner`` up to ``limit`` deliveries due at ``now``, oldest due first; never one that another
    owner's live claim holds."""
    now = now or utc_now()
    oldest = (select(deliveries.c.id).where(_due(now)).order_by(deliveries.c.next_attempt_at).limit(limit)
              .with_for_update(skip_locked=True))
    with write(engine) as connection:
        ids = connection.execute(oldest).scalars().all()  # locked by this transaction (PostgreSQL) until it ends
        if not ids:
            return []
        claimed = [_delivery(row) for row in connection.execute(
            update(deliveries).where(deliveries.c.id.in_(ids), _due(now))
            .values(claim_owner=owner, claim_expires_at=now + timedelta(seconds=lease_seconds))
            .returning(*deliveries.c))]
    return sorted(claimed, key=lambda delivery: delivery.next_attempt_at or now)


def claim_one(engine: Engine, job_id: str, delivery_id: str, owner: str, now: datetime | None = None,
              lease_seconds: float = DELIVERY_LEASE_SECONDS) -> QueuedDelivery:
    """Claim ``job_id``'s delivery ``delivery_id`` for a redelivery now, whatever its status;
    ``DeliveryNotFound``, or ``DeliveryInProgress`` while another attempt of it is being made."""
    now = now or utc_now()
    mine = and_(deliveries.c.id == delivery_id, deliveries.c.job_id == job_id)
    with write(engine) as connection:
        row = connection.execute(update(deliveries).where(mine, _free(now)).values(
            claim_owner=owner, claim_expires_at=now + timedelta(seconds=lease_seconds))
            .returning(*deliveries.c)).one_or_none()
        if row is None:
            if connection.execute(select(deliveries.c.id).where(mine)).first() is None:
                raise DeliveryNotFound(job_id, delivery_id)
            raise DeliveryInProgress(delivery_id)
    return _delivery(row)


def record_attempt(engine: Engine, delivery_id: str, owner: str, attempt: LoggedAttempt,
                   next_at: datetime | None) -> LoggedAttempt:
    """Log ``attempt`` (its number is assigned here) and let go of ``owner``'s claim; the delivery is then
    pending until ``next_at``, or finished: delivered, refused, or failed (given up) when ``next_at`` is None."""
    if attempt.outcome == "delivered":
        status, next_at = DELIVERED, None
    elif attempt.outcome == "refused":
        status, next_at = REFUSED, None
    else:
        status = PENDING if next_at is not None else GAVE_UP
    with write(engine) as connection:
        mine = deliveries.c.claim_owner == owner  # a claim another service took after ours ran out stays its
        row = connection.execute(update(deliveries).where(deliveries.c.id == delivery_id).values(
            attempts=deliveries.c.attempts + 1, status=status, next_attempt_at=next_at,
            first_attempt_at=func.coalesce(deliveries.c.first_attempt_at, attempt.at),
            claim_owner=case((mine, None), else_=deliveries.c.claim_owner),
            claim_expires_at=case((mine, None), else_=deliveries.c.claim_expires_at),
        ).returning(deliveries.c.attempts)).one()
        logged = LoggedAttempt(row.attempts, attempt.at, attempt.outcome, attempt.status_code, attempt.error,
                               attempt.latency_ms, attempt.redelivery)
        connection.execute(insert(webhook_attempts).values(delivery_id=delivery_id, **logged.__dict__))
    return logged


def job_deliveries(engine: Engine, job_id: str) -> list[QueuedDelivery]:
    """``job_id``'s deliveries, oldest first, each with its attempts (its delivery log)."""
    with read(engine) as connection:
        rows = connection.execute(select(deliveries).where(deliveries.c.job_id == job_id)
                                  .order_by(deliveries.c.created_at, deliveries.c.id)).all()
        attempts = connection.execute(
            select(webhook_attempts).join(deliveries, deliveries.c.id == webhook_attempts.c.delivery_id)
            .where(deliveries.c.job_id == job_id).order_by(webhook_attempts.c.number)).all()
    log: dict[str, list[LoggedAttempt]] = {}
    for attempt in attempts:
        fields = attempt._mapping
        log.setdefault(attempt.delivery_id, []).append(
            LoggedAttempt(**{name: fields[name] for name in LoggedAttempt.__dataclass_fields__}))
    return [_delivery(row, log.get(row.id)) for row in rows]
