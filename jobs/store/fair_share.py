"""Fair share: the order in which dispatchers take queued jobs, across owners (accounts, site logins, anonymous).

Each owner with a claimable job is ranked by the GPU time it used lately divided by its account's ``weight`` (1
unless an operator set another; owners without an account weigh 1): the seconds its jobs ran that finished within
``FAIR_SHARE_WINDOW``, plus those running now, each counting at least the window's mean job duration (so that
jobs claimed at the same moment already count). The least-served owner's oldest job is next; ties go to the oldest
job, so one owner alone is served first in, first out. One ``SELECT`` on SQLite and PostgreSQL alike; GPU time is
claim to completion as the store sees it (``started_at`` to ``completed_at``).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Float, Select, and_, case, func, literal, or_, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from jobs.contract import FAIR_SHARE_JOB_SECONDS, FAIR_SHARE_WINDOW, PROCESSING
from jobs.store.schema import accounts, jobs


class epoch_seconds(FunctionElement[float]):
    """A timestamp column as seconds since 1970 (a float), on either database."""

    type = Float()
    inherit_cache = True


@compiles(epoch_seconds, "sqlite")
def _epoch_sqlite(element: epoch_seconds, compiler: Any, **kw: Any) -> str:
    return f"((julianday({compiler.process(element.clauses, **kw)}) - 2440587.5) * 86400.0)"


@compiles(epoch_seconds, "postgresql")
def _epoch_postgresql(element: epoch_seconds, compiler: Any, **kw: Any) -> str:
    return f"EXTRACT(EPOCH FROM {compiler.process(element.clauses, **kw)})"


def _larger(a: Any, b: Any) -> Any:
    """The larger of two numbers (SQLite's ``max(a, b)`` is PostgreSQL's ``GREATEST``: a CASE is both)."""
    return case((a > b, a), else_=b)


def usage(now: datetime, window: timedelta = FAIR_SHARE_WINDOW) -> Any:
    """Per owner: the GPU seconds of its jobs finished within ``window`` before ``now``, and of those running."""
    past = jobs.alias("past")
    since = now - window
    ran = epoch_seconds(past.c.completed_at) - epoch_seconds(past.c.started_at)
    typical = (select(func.coalesce(func.avg(ran), FAIR_SHARE_JOB_SECONDS))
               .where(past.c.completed_at >= since, past.c.started_at.is_not(None)).scalar_subquery())
    running = and_(past.c.status == PROCESSING, past.c.claim_expires_at >= now)
    elapsed = literal(now.timestamp(), Float) - epoch_seconds(past.c.started_at)
    spent = case((running, _larger(elapsed, typical)), else_=ran)
    return (select(past.c.owner, func.sum(spent).label("seconds"))
            .where(past.c.started_at.is_not(None), or_(running, past.c.completed_at >= since))
            .group_by(past.c.owner).subquery("usage"))


def in_fair_order(claimable: Any, now: datetime, window: timedelta = FAIR_SHARE_WINDOW) -> Select[tuple[int]]:
    """``seq`` of the ``claimable`` jobs, the next to take first: least GPU time per weight, then oldest."""
    used = usage(now, window)
    share = func.coalesce(used.c.seconds, 0.0) / func.coalesce(accounts.c.weight, 1.0)
    return (select(jobs.c.seq)
            .select_from(jobs.outerjoin(used, used.c.owner == jobs.c.owner)
                         .outerjoin(accounts, accounts.c.id == jobs.c.owner))
            .where(claimable).order_by(share, jobs.c.seq))
