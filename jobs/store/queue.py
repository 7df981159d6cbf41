"""Where a waiting job stands, cluster-wide: how many jobs are ahead of it and about how long until it starts.

A job waits in two places: in the store until a dispatcher claims it (``starting``), then, claimed
(``processing``), in HAProxy's worker queue until a worker takes it: the worker's first progress event (step 0,
sent when it starts the job) sets ``progress_step``. The jobs *ahead* of a job are those accepted before it (a
lower ``seq``) that have not started on a worker yet, whichever balancer accepted or claimed them (every
balancer shares the store). Not counted: jobs asked to cancel (they will not run) and jobs running on a worker.

The wait is an estimate from the store alone: the median generating time of the last ``RECENT`` succeeded
jobs (the worker's ``timings.generate_ms``), times the jobs ahead, plus what the running jobs still have to
do, shared among the workers that run them (at least one). Every query uses the ``(status, seq)`` index.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, Connection, Engine, and_, func, or_, select

from jobs.contract import PROCESSING, STARTING, SUCCEEDED
from jobs.store.engine import read
from jobs.store.records import Job, utc_now
from jobs.store.schema import jobs

RECENT = 20
"""Succeeded jobs whose generating time makes the median (the newest ones: the workers' speed now)."""


@dataclass(frozen=True)
class QueueEstimate:
    """A waiting job's place: ``ahead`` jobs before it (0: it is next) and about ``wait_s`` seconds until it
    starts (None while no job has succeeded yet to tell how long one takes)."""

    ahead: int
    wait_s: int | None


def waiting(job: Job) -> bool:
    """Whether ``job`` has not started on a worker yet: queued, or claimed and not yet taken by a worker."""
    return job.cancel_requested_at is None and (
        job.status == STARTING or (job.status == PROCESSING and job.progress_step is None))


def _not_started_before(seq: int, now: datetime) -> list[ColumnElement[bool]]:
    """Jobs accepted before ``seq`` that have not started on a worker, as two conditions of the ``(status, seq)``
    index: queued ones (the index alone counts them; a queued job asked to cancel is canceled at once), and
    claimed ones no worker runs (few: one per dispatch slot; a claim whose lease expired will run again)."""
    claimed = and_(jobs.c.status == PROCESSING, jobs.c.seq < seq, jobs.c.cancel_requested_at.is_(None),
                   or_(jobs.c.progress_step.is_(None), jobs.c.claim_expires_at < now))
    return [and_(jobs.c.status == STARTING, jobs.c.seq < seq), claimed]


def _median_generating_s(connection: Connection) -> float | None:
    """The median generating time (seconds) of the newest succeeded jobs; None before the first."""
    rows = connection.execute(select(jobs.c.generation).where(jobs.c.status == SUCCEEDED)
                              .order_by(jobs.c.seq.desc()).limit(RECENT)).scalars()
    times = [float(ms) / 1000 for generation in rows
             if isinstance(ms := ((generation or {}).get("timings") or {}).get("generate_ms"), int | float)]
    return statistics.median(times) if times else None


def _running_started(connection: Connection, now: datetime) -> list[datetime]:
    """When each job running on a worker now was first claimed (their number: the workers busy)."""
    return list(connection.execute(
        select(jobs.c.started_at).where(jobs.c.status == PROCESSING, jobs.c.progress_step.is_not(None),
                                        jobs.c.claim_expires_at >= now, jobs.c.started_at.is_not(None))).scalars())


def _ahead(connection: Connection, job: Job, now: datetime) -> int:
    """The jobs ahead of ``job``: accepted before it, not started on a worker."""
    return sum(connection.execute(select(func.count()).select_from(jobs).where(condition)).scalar_one()
               for condition in _not_started_before(job.seq, now))


def queue_estimate(engine: Engine, job: Job, now: datetime | None = None) -> QueueEstimate | None:
    """Where ``job`` stands while it waits (``waiting``); None once it runs, ends or is asked to cancel."""
    if not waiting(job):
        return None
    now = now or utc_now()
    with read(engine) as connection:
        ahead = _ahead(connection, job, now)
        median = _median_generating_s(connection)
        running = _running_started(connection, now)
    if median is None:
        return QueueEstimate(ahead, None)
    left = sum(max(0.0, median - (now - started).total_seconds()) for started in running)
    return QueueEstimate(ahead, math.ceil((median * ahead + left) / max(len(running), 1)))
