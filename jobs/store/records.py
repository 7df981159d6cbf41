"""The store's values as the rest of the jobs package sees them: plain, immutable records read from rows."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Row

from jobs.contract import ACTIVE, OUTPUT, STARTING, TERMINAL


def utc_now() -> datetime:
    """The time the store writes: timezone-aware UTC (every host's clock is NTP's; leases tolerate seconds)."""
    return datetime.now(UTC)


@dataclass(frozen=True)
class Job:
    """A job as stored: what was asked, where it stands, who holds it."""

    id: str
    seq: int
    owner: str
    status: str
    input: dict[str, Any]
    idempotency_key: str | None
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    expires_at: datetime
    error: str | None
    attempts: int
    claim_owner: str | None
    claim_expires_at: datetime | None
    cancel_requested_at: datetime | None
    progress_step: int | None
    progress_steps: int | None
    last_event_seq: int
    generation: dict[str, Any] | None = None
    """The worker's account of a succeeded job: worker_id, model, seed, params, timings (``GenerationResult``
    without its images)."""

    @classmethod
    def from_row(cls, row: Row[Any]) -> Job:
        """The record of a ``jobs`` row (every column selected)."""
        fields = row._mapping
        return cls(**{name: fields[name] for name in cls.__dataclass_fields__})

    @property
    def queued(self) -> bool:
        """Waiting for a dispatcher (Replicate's ``starting``)."""
        return self.status == STARTING

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


@dataclass(frozen=True)
class Image:
    """A result to store: the bytes and what they are (the store computes size and SHA-256 itself)."""

    data: bytes
    media_type: str = "image/png"
    width: int | None = None
    height: int | None = None
    role: str = OUTPUT


@dataclass(frozen=True)
class StoredResult:
    """A stored result's description; its bytes come separately (``outcomes.result_data``)."""

    job_id: str
    role: str
    index: int
    sha256: str
    media_type: str
    size: int
    width: int | None
    height: int | None


@dataclass(frozen=True)
class Event:
    """One entry of a job's log: ``seq`` is 1, 2, ... per job (an SSE stream's event id)."""

    job_id: str
    seq: int
    kind: str
    data: dict[str, Any]
    at: datetime


@dataclass(frozen=True)
class JobFilter:
    """Which of an owner's jobs a listing shows: accepted in ``[since, until)``, with ``preset``, with ``text`` in
    the prompt (any case), submitted with the ``Idempotency-Key`` ``key``; None: no condition."""

    since: datetime | None = None
    until: datetime | None = None
    preset: str | None = None
    text: str | None = None
    key: str | None = None


@dataclass(frozen=True)
class Page:
    """One page of a listing, newest first; ``next_cursor`` is None on the last page."""

    jobs: list[Job]
    next_cursor: str | None


class Lease(enum.Enum):
    """What a dispatcher's renewal (or progress report) learnt about its claim."""

    HELD = "held"
    """Still the job's holder: go on."""
    CANCEL_REQUESTED = "cancel_requested"
    """Still the holder, but a client asked to cancel: stop the GPU, then ``mark_canceled``."""
    LOST = "lost"
    """No longer the holder (lease expired and taken over, or the job finished): stop, write nothing."""


@dataclass(frozen=True)
class Settled:
    """What a ``finish``/``fail``/``mark_canceled`` did: ``written`` is False when the job was already finished
    (another dispatcher's result came first, or a cancel), and ``job`` is then the job as it stays."""

    job: Job
    written: bool
