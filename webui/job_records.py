"""What a worker and the jobs service say about a REST generation the worker records (``WORKER_JOBS_PREFIX``).

``POST {prefix}`` (``JobRecording``) answers ``RecordedJob``; ``POST {prefix}/{id}/lease`` (``LeaseReport``, the
latest step with it) answers ``LeaseAnswer``; ``POST {prefix}/{id}/result`` carries the worker's
``GenerationResult`` JSON; ``POST {prefix}/{id}/end`` (``JobEnd``) a failure or a cancel. Outcomes are written
once: the first writer wins, whoever held the job.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from webui.contract import RECORD_JOB_HEADER
from webui.schema import MAX_SEED
from webui.trace import ID_SHAPE

MAX_HOLDER = 160
"""The longest holder: ``client:``, a worker's name (64) and a request id (64)."""


def marked(headers: Mapping[str, str]) -> bool:
    """Whether the balancer asked for this request's job to be recorded (``RECORD_JOB_HEADER``)."""
    return headers.get(RECORD_JOB_HEADER) == "1"


def request_seed(request_id: str) -> int:
    """The seed every attempt of the balancer's request ``request_id`` draws, on any worker or the jobs service."""
    return int.from_bytes(hashlib.sha256(request_id.encode()).digest()[:8], "big") % (MAX_SEED + 1)


class JobRecording(BaseModel):
    """A job to record for the balancer's request ``request_id``, held by ``worker``."""

    model_config = ConfigDict(extra="forbid")
    request_id: str = Field(pattern=f"^{ID_SHAPE.pattern}$", max_length=64)
    worker: str = Field(min_length=1, max_length=64)
    input: dict[str, Any] = Field(description="The job's fields as the worker checked them, its photo left out.")


class RecordedJob(BaseModel):
    id: str
    holder: str = Field(max_length=MAX_HOLDER)
    """Who holds it now: passed back with each report."""
    attempt: int


class LeaseReport(BaseModel):
    model_config = ConfigDict(extra="forbid")
    holder: str = Field(max_length=MAX_HOLDER)
    worker: str = Field(min_length=1, max_length=64)
    """Who made the step (the job's progress events name it)."""
    step: int | None = Field(None, ge=0)
    steps: int | None = Field(None, ge=1)


class LeaseAnswer(BaseModel):
    lease: Literal["held", "cancel_requested", "lost"]


class JobEnd(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: Literal["failed", "canceled"]
    error: str | None = Field(None, max_length=2000)
