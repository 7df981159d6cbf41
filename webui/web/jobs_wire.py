"""The ``/v1/jobs`` API as the web front reads it: paths, statuses, event names and the JSON it uses.

The web front may not import the ``jobs`` package (``tests/test_layering.py``), so it speaks the HTTP contract
that ``docs/jobs.md`` describes; what it relies on is written down here, once. Unknown fields are ignored, so
the service may add fields without breaking a web front.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

PREFIX = "/v1/jobs"
SESSIONS = "/v1/sessions"
ACCOUNT = "/v1/account"
SCOPES = ("generate", "history", "admin")
"""An API key's scopes (``docs/accounts.md``), as the account page offers them."""
IDEMPOTENCY_KEY = "Idempotency-Key"
LAST_EVENT_ID = "Last-Event-ID"

SUCCEEDED, FAILED, CANCELED = "succeeded", "failed", "canceled"
TERMINAL_STATUSES = (SUCCEEDED, FAILED, CANCELED)
TERMINAL_EVENTS = ("result", "failed", "canceled")
"""The SSE events that end a job's stream; their data is the job's JSON."""
QUEUED, STARTED, PROGRESS = "queued", "started", "progress"


LISTING_FILTERS = ("since", "until", "preset", "q")
"""``GET /v1/jobs``'s filters: accepted from (ISO date or time), before, the studio preset, text in the prompt."""
PRESET = "preset"
"""A job's label on top of the worker's fields: the studio preset it was made with."""


def job_path(job_id: str, *parts: str | int) -> str:
    """``/v1/jobs/{id}`` and below, e.g. ``job_path(id, "results", 0)``."""
    return "/".join([PREFIX, job_id, *map(str, parts)])


class ResultFile(BaseModel):
    """One image of a succeeded job."""

    model_config = ConfigDict(extra="ignore")
    url: str
    sha256: str
    width: int | None = None
    height: int | None = None


class JobProgress(BaseModel):
    model_config = ConfigDict(extra="ignore")
    step: int
    steps: int


class JobSnapshot(BaseModel):
    """A job as ``GET /v1/jobs/{id}`` (and a terminal event) shows it: the parts the web front uses."""

    model_config = ConfigDict(extra="ignore")
    id: str
    status: str
    input: dict[str, Any] = {}
    progress: JobProgress | None = None
    results: list[ResultFile] = []
    error: str | None = None
    attempts: int = 0
    queue_position: int | None = None
    generation: dict[str, Any] | None = None
    """The worker's account of a succeeded job: ``GenerationResult`` without images, plus its worker attempts."""
    created_at: datetime | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


@dataclass(frozen=True)
class JobEvent:
    """One Server-Sent Event of a job's stream: its name, its number (None for an unlogged queue update) and data."""

    name: str
    id: int | None
    data: dict[str, Any]

    @property
    def terminal(self) -> bool:
        return self.name in TERMINAL_EVENTS

    def snapshot(self) -> JobSnapshot:
        """The job's JSON a terminal event carries."""
        return JobSnapshot.model_validate(self.data)


class JobListing(BaseModel):
    """One page of ``GET /v1/jobs`` (the caller's jobs, newest first); ``next_cursor`` None on the last page."""

    model_config = ConfigDict(extra="ignore")
    jobs: list[JobSnapshot]
    next_cursor: str | None = None


class ShareLinks(BaseModel):
    """``POST /v1/jobs/{id}/share``'s answer: one link per result (paths on the site) and when they stop working."""

    job_id: str
    expires_at: datetime
    urls: list[str]


class SignedIn(BaseModel):
    """``/v1/sessions``' answer: a member's browser session (its ``token`` only in the answer to a sign-in)."""

    account: str
    user: str
    role: str
    expires_at: datetime
    token: str | None = None


class AccountMember(BaseModel):
    user: str
    role: str
    added_at: datetime


class AccountKey(BaseModel):
    """An API key as ``/v1/account`` shows it; ``key`` (the key itself) only in the answer that creates it."""

    id: str
    prefix: str
    label: str | None = None
    scopes: list[str]
    created_at: datetime
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None
    key: str | None = None


class AccountPage(BaseModel):
    """``GET /v1/account``: the signed-in admin's account, its members and keys."""

    account: str
    user: str
    members: list[AccountMember]
    keys: list[AccountKey]
