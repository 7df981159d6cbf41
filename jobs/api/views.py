"""A stored job as the API shows it: the public JSON of ``GET /v1/jobs/{id}``, built from the store (blocking;
the routes call these functions in a worker thread)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine

from jobs.api.models import JobAccepted, JobUrls, JobView
from jobs.contract import API_PREFIX as PREFIX
from jobs.contract import job_path
from jobs.store import Job, QueueEstimate, queue_estimate
from jobs.store.engine import read
from jobs.store.outbox import public_json

__all__ = ["PLACE", "PREFIX", "accepted", "job_path", "place", "urls", "view"]

PLACE = ("queue_position", "wait_s")
"""A waiting job's place: jobs ahead of it, about how many seconds until a worker runs it."""


def place(estimate: QueueEstimate | None) -> dict[str, Any]:
    """A waiting job's place as events and the job's JSON show it."""
    return dict(zip(PLACE, (estimate.ahead, estimate.wait_s) if estimate else (None, None), strict=True))


def urls(job_id: str) -> JobUrls:
    return JobUrls(get=job_path(job_id), events=job_path(job_id, "events"), cancel=job_path(job_id, "cancel"))


def accepted(job: Job) -> JobAccepted:
    """The short answer to a submission that is still running."""
    return JobAccepted(id=job.id, status=job.status, created_at=job.created_at, urls=urls(job.id))


def view(engine: Engine, job: Job) -> JobView:
    """The job's public JSON: status, its place while it waits (jobs ahead, about how long), progress, results,
    error, timestamps (the store's ``public_json``, which webhook bodies carry too)."""
    with read(engine) as connection:
        shown = public_json(connection, job)
    return JobView(**shown, **place(queue_estimate(engine, job)))
