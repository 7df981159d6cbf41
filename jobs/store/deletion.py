"""Deleting jobs: their bytes and rows everywhere (results, thumbnails, events, webhook deliveries and attempts,
the job), leaving a tombstone (id, owner, when) so the API answers ``410 Gone`` for them rather than 404.

The retention janitor (``retention.py``) buries expired jobs in batches; an owner deletes one job here.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, delete, insert, select

from jobs.errors import JobGone, JobNotFound, JobStillActive
from jobs.store.engine import write
from jobs.store.records import Job, utc_now
from jobs.store.schema import job_events, jobs, results, thumbnails, tombstones, webhook_attempts, webhook_deliveries

logger = logging.getLogger(__name__)


def bury(connection: Connection, buried: Sequence[Any], now: datetime) -> None:
    """In the caller's write transaction: delete the jobs ``buried`` (rows with ``id`` and ``owner``) and all
    they own, and leave their tombstones."""
    ids = [row.id for row in buried]
    connection.execute(insert(tombstones), [{"id": row.id, "owner": row.owner, "expired_at": now} for row in buried])
    connection.execute(delete(webhook_attempts).where(webhook_attempts.c.delivery_id.in_(
        select(webhook_deliveries.c.id).where(webhook_deliveries.c.job_id.in_(ids)))))
    for table in (results, thumbnails, job_events, webhook_deliveries):
        connection.execute(delete(table).where(table.c.job_id.in_(ids)))
    connection.execute(delete(jobs).where(jobs.c.id.in_(ids)))


def delete_job(engine: Engine, job_id: str, owner: str, now: datetime | None = None) -> Job:
    """Delete ``owner``'s finished job ``job_id`` now; returns it as it was. ``JobNotFound`` when ``owner`` has
    no such job (another owner's job is not shown to exist), ``JobGone`` when it was deleted already,
    ``JobStillActive`` while it is queued or running."""
    with write(engine) as connection:
        row = connection.execute(select(jobs).where(jobs.c.id == job_id).with_for_update()).one_or_none()
        if row is None:
            gone = select(tombstones.c.owner).where(tombstones.c.id == job_id)
            if connection.execute(gone).scalar_one_or_none() == owner:
                raise JobGone(job_id)
            raise JobNotFound(job_id)
        job = Job.from_row(row)
        if job.owner != owner:
            raise JobNotFound(job_id)
        if job.active:
            raise JobStillActive(job_id, job.status)
        bury(connection, [row], now or utc_now())
    logger.info("job %s deleted by its owner", job_id)
    return job
