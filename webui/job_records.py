"""What a worker and the jobs service say about a REST generation the worker records (``WORKER_JOBS_PREFIX``).

``POST {prefix}`` (``JobRecording``) answers ``RecordedJob``; ``POST {prefix}/{id}/lease`` (``LeaseReport``, the
latest step with it) answers ``LeaseAnswer``; ``POST {prefix}/{id}/result`` carries the worker's
``GenerationResult`` JSON; ``POST {prefix}/{id}/end`` (``JobEnd``) a failure or a cancel. Outcomes are written
once: the first writer wins, whoever held the job.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from webui.contract import MAX_UPLOAD_BYTES, PHOTO_FIELD, RECORD_JOB_HEADER
from webui.schema import MAX_SEED
from webui.trace import ID_SHAPE

MAX_RECORDED_PHOTO = (MAX_UPLOAD_BYTES + 2) // 3 * 4
"""The longest retouch photo (base64) a record carries: the default upload limit's. A larger one (a worker allowed
more) is left out, and its job keeps no photo."""
MAX_RECORDED_FIELDS = 64 * 1024
"""The most bytes a record's other fields take as JSON."""
MAX_RECORD_BYTES = MAX_RECORDED_FIELDS + MAX_RECORDED_PHOTO + 1024
"""The largest record body: its fields, its photo and the envelope."""
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
    input: dict[str, Any] = Field(description="The job's fields as the worker checked them; a retouch's photo "
                                  "(``init_image``) up to ``MAX_RECORDED_PHOTO``.")

    @model_validator(mode="after")
    def _bounded(self) -> JobRecording:
        photo = self.input.get(PHOTO_FIELD)
        if photo is not None and not (isinstance(photo, str) and len(photo) <= MAX_RECORDED_PHOTO):
            raise ValueError(f"input.{PHOTO_FIELD}: a base64 string of at most {MAX_RECORDED_PHOTO} characters")
        fields = {name: value for name, value in self.input.items() if name != PHOTO_FIELD}
        if len(json.dumps(fields)) > MAX_RECORDED_FIELDS:
            raise ValueError(f"input: more than {MAX_RECORDED_FIELDS} bytes besides its photo")
        return self


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
