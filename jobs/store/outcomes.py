"""How jobs end: a result written exactly once (the first writer wins), a failure, a cancel; reading results.

``finish``, ``fail`` and ``mark_canceled`` change a job only while it is active (``starting``/``processing``),
in one conditional UPDATE: when a GPU ran a job twice (its first dispatcher's lease expired, a second took it),
the first result to arrive is the job's, and the second is discarded and reported (``Settled.written`` False).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, insert, select, update

from jobs.contract import ACTIVE, CANCELED, EVENT_STATUS, FAILED, OUTPUT, STARTING, SUCCEEDED, WEBHOOK_COMPLETED
from jobs.errors import JobNotFound
from jobs.store.claims import Step, record_step
from jobs.store.engine import read, write
from jobs.store.events import append_event
from jobs.store.outbox import enqueue
from jobs.store.records import Image, Job, Settled, StoredResult, utc_now
from jobs.store.schema import jobs, results, thumbnails
from jobs.store.thumbnails import rows as thumbnail_rows

logger = logging.getLogger(__name__)

DESCRIPTION = [column for column in results.c if column.name != "data"]
"""A result's columns without its bytes."""


def finish(engine: Engine, job_id: str, images: Sequence[Image], now: datetime | None = None,
           generation: dict[str, Any] | None = None, thumbnails: bool = True,
           last_step: tuple[str, Step] | None = None) -> Settled:
    """Store ``images`` as ``job_id``'s results (and ``generation``, the worker's account of them: worker, model,
    timings) and mark it ``succeeded`` — unless it already ended. ``thumbnails`` False: none are made now (about
    10 ms a 512 px PNG) but at their first read, for a client waiting on this write. ``last_step``: (holder, step)
    not yet recorded, recorded first in the same transaction (its events end on their last step)."""
    now = now or utc_now()
    thumbs = thumbnail_rows(job_id, images) if thumbnails else []
    with write(engine) as connection:
        if last_step is not None:
            record_step(connection, job_id, *last_step, lease_seconds=0.0, now=now)  # the claim ends here anyway
        return _settle(connection, job_id, SUCCEEDED, {"results": len(images)}, now, images=images,
                       generation=generation, thumbs=thumbs)


def _result_row(job_id: str, index: int, image: Image) -> dict[str, Any]:
    return {"job_id": job_id, "role": image.role, "index": index, "sha256": hashlib.sha256(image.data).hexdigest(),
            "media_type": image.media_type, "size": len(image.data), "width": image.width, "height": image.height,
            "data": image.data}


def fail(engine: Engine, job_id: str, error: str, now: datetime | None = None) -> Settled:
    """Mark ``job_id`` ``failed`` with ``error`` (words for the client) — unless it already ended."""
    now = now or utc_now()
    with write(engine) as connection:
        return _settle(connection, job_id, FAILED, {"error": error}, now, error=error)


def mark_canceled(engine: Engine, job_id: str, now: datetime | None = None) -> Settled:
    """The holder stopped after a cancel request: mark ``job_id`` ``canceled`` — unless it already ended."""
    now = now or utc_now()
    with write(engine) as connection:
        return _settle(connection, job_id, CANCELED, {}, now)


def cancel(engine: Engine, job_id: str, now: datetime | None = None) -> Job:
    """A client's cancel. A queued job (or one whose holder's lease expired) is ``canceled`` at once; a running
    one gets a cancel request its holder sees at its next renewal (``Lease.CANCEL_REQUESTED``); a finished one
    stays as it is. Returns the job as it is now."""
    now = now or utc_now()
    with write(engine) as connection:
        row = connection.execute(select(jobs).where(jobs.c.id == job_id).with_for_update()).one_or_none()
        if row is None:
            raise JobNotFound(job_id)
        job = Job.from_row(row)
        if not job.active:
            return job
        if job.status == STARTING or (job.claim_expires_at is not None and job.claim_expires_at < now):
            return _settle(connection, job_id, CANCELED, {}, now).job
        if job.cancel_requested_at is None:
            row = connection.execute(update(jobs).where(jobs.c.id == job_id).values(cancel_requested_at=now)
                                     .returning(*jobs.c)).one()
        return Job.from_row(row)


def _settle(connection: Connection, job_id: str, status: str, event: dict[str, Any], now: datetime,
            error: str | None = None, images: Sequence[Image] = (),
            generation: dict[str, Any] | None = None, thumbs: Sequence[dict[str, Any]] = ()) -> Settled:
    """End ``job_id`` with ``status`` (and ``images``) if it is still active, with an event and its
    ``completed`` webhook; else report what it already is."""
    row = connection.execute(
        update(jobs).where(jobs.c.id == job_id, jobs.c.status.in_(ACTIVE))
        .values(status=status, completed_at=now, error=error, claim_owner=None, claim_expires_at=None,
                generation=generation)
        .returning(*jobs.c)).one_or_none()
    if row is not None:
        if images:
            connection.execute(insert(results), [_result_row(job_id, index, image)
                                                 for index, image in enumerate(images)])
        if thumbs:
            connection.execute(insert(thumbnails), list(thumbs))
        append_event(connection, job_id, EVENT_STATUS, {"status": status, **event}, now)
        enqueue(connection, Job.from_row(row), WEBHOOK_COMPLETED, now)
        return Settled(Job.from_row(row), written=True)
    row = connection.execute(select(jobs).where(jobs.c.id == job_id)).one_or_none()
    if row is None:
        raise JobNotFound(job_id)
    logger.info("job %s is already %s: a later %s was discarded", job_id, row.status, status)
    return Settled(Job.from_row(row), written=False)


def stored_results(engine: Engine, job_id: str, role: str = OUTPUT) -> list[StoredResult]:
    """Descriptions of ``job_id``'s results (no bytes), in order."""
    query = (select(*DESCRIPTION).where(results.c.job_id == job_id, results.c.role == role)
             .order_by(results.c.index))
    with read(engine) as connection:
        return [StoredResult(**row._mapping) for row in connection.execute(query)]


def result_data(engine: Engine, job_id: str, index: int, role: str = OUTPUT) -> tuple[StoredResult, bytes]:
    """One result's description and bytes; ``JobNotFound`` when there is no such result."""
    query = select(*DESCRIPTION, results.c.data).where(results.c.job_id == job_id, results.c.role == role,
                                                       results.c.index == index)
    with read(engine) as connection:
        row = connection.execute(query).one_or_none()
    if row is None:
        raise JobNotFound(job_id)
    fields = dict(row._mapping)
    return StoredResult(**{k: v for k, v in fields.items() if k != "data"}), bytes(fields["data"])
