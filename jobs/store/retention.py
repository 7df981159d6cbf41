"""The janitor: jobs whose retention ran out are deleted with all they own (``deletion.bury``), in bounded
batches, and each leaves a tombstone (id, owner, when) so the API answers ``410 Gone`` for it rather than 404.

Safe on several hosts at once: on PostgreSQL a batch's rows are taken ``FOR UPDATE SKIP LOCKED``, so two
janitors delete different jobs. On SQLite the freed pages go back to the file system
(``PRAGMA incremental_vacuum``; the file is created with ``auto_vacuum = INCREMENTAL``).
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import Engine, select

from jobs.contract import JANITOR_BATCH
from jobs.store.deletion import bury
from jobs.store.engine import write
from jobs.store.records import utc_now
from jobs.store.schema import jobs

logger = logging.getLogger(__name__)


def sweep_expired(engine: Engine, now: datetime | None = None, batch: int = JANITOR_BATCH) -> int:
    """Delete every job that expired by ``now`` (default: the present), ``batch`` jobs per transaction; returns
    how many were deleted."""
    now = now or utc_now()
    deleted = 0
    while (count := _sweep_batch(engine, now, batch)) > 0:
        deleted += count
        if count < batch:
            break
    if deleted:
        logger.info("janitor: deleted %d expired jobs with their results and events", deleted)
        if engine.dialect.name == "sqlite":
            _give_back_free_pages(engine)
    return deleted


def _give_back_free_pages(engine: Engine) -> None:
    """SQLite: return the file's free pages to the file system (``incremental_vacuum`` frees one page per step
    of its statement, so it runs through the driver's script call, which steps it to the end)."""
    with engine.connect() as connection:
        connection.connection.driver_connection.executescript("PRAGMA incremental_vacuum")


def _sweep_batch(engine: Engine, now: datetime, batch: int) -> int:
    due = (select(jobs.c.id, jobs.c.owner).where(jobs.c.expires_at <= now).order_by(jobs.c.expires_at)
           .limit(batch).with_for_update(skip_locked=True))
    with write(engine) as connection:
        expired = connection.execute(due).all()
        if not expired:
            return 0
        bury(connection, expired, now)
    return len(expired)

