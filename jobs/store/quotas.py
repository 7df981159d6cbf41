"""Quotas: what an account used against its limits, read from the shared store (so every jobs service agrees).

An account's ``max_running`` counts its jobs queued or running (``starting``, ``processing``); its
``daily_images`` counts the images (``num_images``) of its jobs created since 00:00 UTC, except jobs that failed
or were canceled before a worker started them (they used no GPU). Both are read in one transaction just before a
submission, not reserved with it: submissions of one account arriving at the very same moment on several hosts may
each pass, so a limit can be exceeded by those few.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time

from sqlalchemy import Engine, and_, func, not_, or_, select

from jobs.contract import ACTIVE, CANCELED, FAILED
from jobs.store.engine import read
from jobs.store.schema import accounts, jobs


@dataclass(frozen=True)
class Usage:
    """An account's limits (None: none) and what it used against them."""

    max_running: int | None
    daily_images: int | None
    active: int
    """Its jobs queued or running now."""
    images_today: int
    """Images its jobs asked for since 00:00 UTC (failed or canceled before starting: not counted)."""


def start_of_day(now: datetime) -> datetime:
    """00:00 UTC of ``now``'s day (``now`` is UTC)."""
    return datetime.combine(now.date(), time(), tzinfo=now.tzinfo)


def quota_usage(engine: Engine, owner: str, now: datetime, idempotency_key: str | None = None) -> Usage | None:
    """``owner``'s usage when it is an account with a limit; None when it has none, or when ``idempotency_key``
    names one of its jobs already (a resend is answered by that job, never refused)."""
    with read(engine) as connection:
        limits = connection.execute(select(accounts.c.max_running, accounts.c.daily_images)
                                    .where(accounts.c.id == owner)).one_or_none()
        if limits is None or (limits.max_running is None and limits.daily_images is None):
            return None
        if idempotency_key is not None and connection.execute(select(jobs.c.id).where(
                jobs.c.owner == owner, jobs.c.idempotency_key == idempotency_key)).first():
            return None
        never_ran = and_(jobs.c.status.in_((FAILED, CANCELED)), jobs.c.started_at.is_(None))
        images = func.coalesce(jobs.c.input["num_images"].as_integer(), 1)
        today = func.coalesce(func.sum(images).filter(jobs.c.created_at >= start_of_day(now), not_(never_ran)), 0)
        active = func.count().filter(jobs.c.status.in_(ACTIVE))
        used = connection.execute(select(active, today).where(
            jobs.c.owner == owner, or_(jobs.c.status.in_(ACTIVE), jobs.c.created_at >= start_of_day(now)))).one()
    return Usage(limits.max_running, limits.daily_images, used[0], used[1])
