"""The ``/v1/jobs`` API's JSON, as pydantic models (they are what the OpenAPI document shows).

A job's input is the worker's own request (``webui.schema.GenerationRequest``: the same fields, checked by the
same code) plus Replicate's ``webhook`` and ``webhook_events_filter``. Errors are ``webui.schema.ErrorBody``,
like every other API of the project.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from webui.schema import GenerationRequest

WEBHOOK_FIELDS = ("webhook", "webhook_events_filter")
"""The webhook fields a job has on top of the worker's request."""
PRESET_FIELD = "preset"
"""A label a job has on top of the worker's request: the studio preset it was made with (history filters by it)."""
MAX_PRESET_CHARS = 100


class JobRequest(GenerationRequest):
    """``POST /v1/jobs``: a generation (the worker's fields) and, optionally, where to send its events."""

    webhook: str | None = Field(None, description="An https URL that receives the job's events (Standard Webhooks).")
    webhook_events_filter: list[str] | None = Field(
        None, description="Which events the webhook receives: start, output (progress), logs, completed. "
        "Default: start and completed.")
    preset: str | None = Field(None, max_length=MAX_PRESET_CHARS, description="The studio preset it was made "
                               "with: a label, kept with the job (GET /v1/jobs?preset= filters by it).")


class JobUrls(BaseModel):
    """Where to find the job again (paths on this service)."""

    get: str
    events: str
    cancel: str


class Progress(BaseModel):
    """How far the denoising has come."""

    step: int
    steps: int


class ResultFile(BaseModel):
    """One image the job made: its URL and what it is."""

    url: str
    sha256: str = Field(description="SHA-256 of the bytes (hex); also the download's ETag.")
    media_type: str
    size: int = Field(description="Bytes.")
    width: int | None = None
    height: int | None = None


class JobAccepted(BaseModel):
    """``202 Accepted``: the job is recorded and queued."""

    id: str
    status: str
    created_at: datetime
    urls: JobUrls


class JobView(JobAccepted):
    """A job as ``GET /v1/jobs/{id}`` shows it (and webhooks send it)."""

    input: dict[str, Any] = Field(description="The job's parameters as accepted (a random seed filled in).")
    queue_position: int | None = Field(None, description="While no worker runs it yet: the jobs accepted before it "
                                       "that have not started either (0: next); else null.")
    wait_s: int | None = Field(None, description="While no worker runs it yet: about how many seconds until one "
                               "does (from recent jobs' generating time); null when not waiting or not yet known.")
    progress: Progress | None = None
    output: list[str] = Field(default_factory=list, description="The results' URLs (Replicate's `output`).")
    results: list[ResultFile] = Field(default_factory=list)
    error: str | None = Field(None, description="Why the job failed, in words.")
    generation: dict[str, Any] | None = Field(
        None, description="How the worker made the results: worker_id, model, seed, params (the effective "
        "parameters) and timings (queue_ms, generate_ms, total_ms); null until the job succeeded.")
    attempts: int = Field(description="How often a dispatcher took the job (more than 1 after a lost dispatcher).")
    started_at: datetime | None = None
    completed_at: datetime | None = None
    expires_at: datetime = Field(description="When the job and its results are deleted (then 410 Gone).")


class JobList(BaseModel):
    """One page of jobs, newest first; ``next`` is the following page's URL (null on the last)."""

    jobs: list[JobView]
    next_cursor: str | None
    next: str | None
