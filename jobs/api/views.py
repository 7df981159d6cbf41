"""A stored job as the API shows it: the public JSON of ``GET /v1/jobs/{id}``, built from the store (blocking;
the routes call these functions in a worker thread)."""

from __future__ import annotations

from sqlalchemy import Engine

from jobs.api.models import JobAccepted, JobUrls, JobView
from jobs.contract import API_PREFIX as PREFIX
from jobs.contract import job_path
from jobs.store import Job, queue_position
from jobs.store.engine import read
from jobs.store.outbox import public_json

__all__ = ["PREFIX", "accepted", "job_path", "urls", "view"]


def urls(job_id: str) -> JobUrls:
    return JobUrls(get=job_path(job_id), events=job_path(job_id, "events"), cancel=job_path(job_id, "cancel"))


def accepted(job: Job) -> JobAccepted:
    """The short answer to a submission that is still running."""
    return JobAccepted(id=job.id, status=job.status, created_at=job.created_at, urls=urls(job.id))


def view(engine: Engine, job: Job) -> JobView:
    """The job's public JSON: status, queue position while it waits, progress, results, error, timestamps (the
    store's ``public_json``, which webhook bodies carry too)."""
    with read(engine) as connection:
        shown = public_json(connection, job)
    return JobView(**shown, queue_position=queue_position(engine, job))
