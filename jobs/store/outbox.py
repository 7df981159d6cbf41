"""The transactional outbox: a job change that a webhook must hear of enqueues its delivery in the same
transaction, so a delivery exists exactly when the change was committed (a crash between the two cannot lose
one or send one for a change that was rolled back).

What is enqueued, for a job submitted with a ``webhook``: ``start`` when a dispatcher first claims it,
``completed`` when it ends (succeeded, failed, canceled) and, when its ``webhook_events_filter`` asks for
``output``, a progress event at most every ``WEBHOOK_PROGRESS_EVERY`` (measured in the store, so the throttle
holds when another host takes the job over). The body is frozen at that moment: the job's public JSON, so every
retry and redelivery of a message carries the same bytes, and ``completed`` carries the one result written.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, insert, select

from jobs.contract import (
    OUTPUT,
    SUCCEEDED,
    WEBHOOK_COMPLETED,
    WEBHOOK_DEFAULT_EVENTS,
    WEBHOOK_OUTPUT,
    WEBHOOK_PROGRESS_EVERY,
    job_path,
)
from jobs.store.records import Job
from jobs.store.schema import results, webhook_deliveries
from webui.contract import PHOTO_FIELD

PENDING = "pending"
"""A delivery whose next attempt is scheduled (``next_attempt_at``)."""
DELIVERED = "delivered"
GAVE_UP = "failed"
"""Every attempt failed and the retry window is over (or the event is not retried)."""
REFUSED = "refused"
"""The target is not allowed (the operator's webhook target policy): never retried."""


def message_id(job_id: str, event: str, sequence: int = 0) -> str:
    """A delivery's id, which is also its ``webhook-id``: one per job, event and sequence (the progress event's
    number), the same on every retry, so receivers can drop duplicates and no event is enqueued twice."""
    return f"msg_{job_id}_{event}_{sequence}"


def _iso(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat()


def public_json(connection: Connection, job: Job) -> dict[str, Any]:
    """The job as the API shows it (``GET /v1/jobs/{id}`` without the queue position), ready for JSON."""
    described = []
    if job.status == SUCCEEDED:
        query = (select(*(column for column in results.c if column.name != "data"))
                 .where(results.c.job_id == job.id, results.c.role == OUTPUT).order_by(results.c.index))
        described = [{"url": job_path(job.id, "results", row.index), "sha256": row.sha256,
                      "media_type": row.media_type, "size": row.size, "width": row.width, "height": row.height}
                     for row in connection.execute(query)]
    progress = None
    if job.progress_step is not None and job.progress_steps is not None:
        progress = {"step": job.progress_step, "steps": job.progress_steps}
    return {
        "id": job.id, "status": job.status, "created_at": _iso(job.created_at),
        "urls": {"get": job_path(job.id), "events": job_path(job.id, "events"), "cancel": job_path(job.id, "cancel")},
        "input": shown_input(job), "progress": progress, "output": [result["url"] for result in described],
        "results": described, "error": job.error, "attempts": job.attempts, "started_at": _iso(job.started_at),
        "completed_at": _iso(job.completed_at), "expires_at": _iso(job.expires_at), "generation": job.generation,
    }


def shown_input(job: Job) -> dict[str, Any]:
    """The job's input as the API shows it: a retouch's photo as the URL of its bytes (``GET .../input``), not the
    megabytes of base64 it was sent as (a page of a listing, a webhook body)."""
    if not job.input.get(PHOTO_FIELD):
        return job.input
    return {**job.input, PHOTO_FIELD: job_path(job.id, "input")}


def wanted(job: Job, event: str) -> bool:
    """Whether ``job`` has a webhook that asked for ``event``."""
    if not job.input.get("webhook"):
        return False
    return event in (job.input.get("webhook_events_filter") or WEBHOOK_DEFAULT_EVENTS)


def enqueue(connection: Connection, job: Job, event: str, now: datetime, sequence: int = 0) -> str | None:
    """Enqueue ``event`` of ``job`` (as it is now, in the caller's write transaction) for its webhook, due at
    once; the delivery's id, or None when the job's webhook did not ask for it or it is enqueued already."""
    if not wanted(job, event):
        return None
    delivery_id = message_id(job.id, event, sequence)
    if connection.execute(select(webhook_deliveries.c.id).where(webhook_deliveries.c.id == delivery_id)).first():
        return None  # a reclaimed job begins again: its webhook heard "start" once
    body = {**public_json(connection, job), "event": event}
    connection.execute(insert(webhook_deliveries).values(
        id=delivery_id, job_id=job.id, event=event, url=job.input["webhook"], created_at=now,
        body=json.dumps(body, ensure_ascii=False, separators=(",", ":")), status=PENDING, attempts=0,
        next_attempt_at=now, retried=event == WEBHOOK_COMPLETED))
    return delivery_id


def enqueue_progress(connection: Connection, job: Job, now: datetime, sequence: int) -> str | None:
    """Enqueue a progress event (``output``) of ``job`` unless its last one is younger than the throttle's
    interval; ``sequence`` is the job's event number for this step."""
    if not wanted(job, WEBHOOK_OUTPUT):
        return None
    last = connection.execute(select(func.max(webhook_deliveries.c.created_at)).where(
        webhook_deliveries.c.job_id == job.id, webhook_deliveries.c.event == WEBHOOK_OUTPUT)).scalar_one()
    if last is not None and now - last < WEBHOOK_PROGRESS_EVERY:
        return None
    return enqueue(connection, job, WEBHOOK_OUTPUT, now, sequence)

