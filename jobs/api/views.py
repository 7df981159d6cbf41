"""A stored job as the API shows it: the public JSON of ``GET /v1/jobs/{id}``, built from the store (blocking;
the routes call these functions in a worker thread)."""

from __future__ import annotations

from sqlalchemy import Engine

from jobs.api.models import JobAccepted, JobUrls, JobView, Progress, ResultFile
from jobs.contract import API_PREFIX, SUCCEEDED
from jobs.store import Job, queue_position, stored_results

PREFIX = API_PREFIX


def job_path(job_id: str, *parts: str | int) -> str:
    """``/v1/jobs/{id}`` and below, e.g. ``job_path(id, "results", 0)``."""
    return "/".join([PREFIX, job_id, *map(str, parts)])


def urls(job_id: str) -> JobUrls:
    return JobUrls(get=job_path(job_id), events=job_path(job_id, "events"), cancel=job_path(job_id, "cancel"))


def accepted(job: Job) -> JobAccepted:
    """The short answer to a submission that is still running."""
    return JobAccepted(id=job.id, status=job.status, created_at=job.created_at, urls=urls(job.id))


def view(engine: Engine, job: Job) -> JobView:
    """The job's public JSON: status, queue position while it waits, progress, results, error, timestamps."""
    results = [ResultFile(url=job_path(job.id, "results", stored.index), sha256=stored.sha256,
                          media_type=stored.media_type, size=stored.size, width=stored.width, height=stored.height)
               for stored in (stored_results(engine, job.id) if job.status == SUCCEEDED else [])]
    progress = None
    if job.progress_step is not None and job.progress_steps is not None:
        progress = Progress(step=job.progress_step, steps=job.progress_steps)
    return JobView(
        id=job.id, status=job.status, created_at=job.created_at, urls=urls(job.id), input=job.input,
        queue_position=queue_position(engine, job), progress=progress, output=[result.url for result in results],
        results=results, error=job.error, attempts=job.attempts, started_at=job.started_at,
        completed_at=job.completed_at, expires_at=job.expires_at,
    )
