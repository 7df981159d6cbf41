"""Accepting jobs and finding them again: submit (idempotent per owner and key), get, list."""

from __future__ import annotations

import base64
import binascii
import logging
import secrets
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Connection, Engine, func, insert, select
from sqlalchemy.exc import IntegrityError

from jobs.contract import (
    ANONYMOUS,
    CLIENT_HELD,
    EVENT_STATUS,
    JOB_ID_PREFIX,
    LEASE_SECONDS,
    PAGE_LIMIT_MAX,
    PROCESSING,
    RETENTION,
    STARTING,
)
from jobs.errors import IdempotencyConflict, InvalidCursor, JobGone, JobNotFound
from jobs.store.account_retention import retention_for
from jobs.store.engine import read, write
from jobs.store.records import Job, JobFilter, Page, utc_now
from jobs.store.schema import job_events, jobs, tombstones

logger = logging.getLogger(__name__)


def new_job_id() -> str:
    """``j_`` and 22 URL-safe random characters (16 random bytes)."""
    return JOB_ID_PREFIX + secrets.token_urlsafe(16)


def submit(engine: Engine, input: dict[str, Any], *, idempotency_key: str | None = None,
           body_hash: str | None = None, owner: str = ANONYMOUS, retention: timedelta = RETENTION,
           now: datetime | None = None) -> tuple[Job, bool]:
    """Record a new job, queued (``starting``); returns (job, created).

    With an ``idempotency_key``: the owner's job with that key and the same ``body_hash`` is returned as it is
    (``created`` False, nothing new queued); another ``body_hash`` raises ``IdempotencyConflict``. Safe when two
    requests with one key arrive at once on two hosts: the unique (owner, key) constraint lets one insert.
    """
    if idempotency_key is not None and body_hash is None:
        raise ValueError("an idempotency key needs the request body's hash to compare with")
    now = now or utc_now()
    try:
        with write(engine) as connection:
            if idempotency_key is not None and (earlier := by_key(connection, owner, idempotency_key)):
                return _replayed(earlier, idempotency_key, body_hash), False
            job_id = new_job_id()
            expires_at = now + retention_for(connection, owner, retention)
            row = connection.execute(insert(jobs).values(
                id=job_id, owner=owner, status=STARTING, input=input, idempotency_key=idempotency_key,
                body_hash=body_hash, created_at=now, expires_at=expires_at, attempts=0, last_event_seq=1,
            ).returning(*jobs.c)).one()
            connection.execute(insert(job_events).values(job_id=job_id, seq=1, kind=EVENT_STATUS,
                                                         data={"status": STARTING}, at=now))
            return Job.from_row(row), True
    except IntegrityError:
        if idempotency_key is None:
            raise
        with read(engine) as connection:  # another host inserted the same key between our look and our insert
            earlier = by_key(connection, owner, idempotency_key)
        if earlier is None:
            raise
        return _replayed(earlier, idempotency_key, body_hash), False


def submit_held(engine: Engine, input: dict[str, Any], holder: str, lease_seconds: float = LEASE_SECONDS, *,
                owner: str = ANONYMOUS, retention: timedelta = RETENTION, now: datetime | None = None,
                job_id: str | None = None, idempotency_key: str | None = None) -> Job:
    """Record a new job already claimed for a client that waits on its connection (a synchronous generation),
    in one transaction: ``processing``, held by ``CLIENT_HELD + holder`` (attempt 1). No dispatcher takes it;
    if the holder's lease runs out (it died, and the client's connection with it) the job ends ``canceled``.
    ``job_id``: one from ``new_job_id`` that the caller chose beforehand (default: a new one). ``idempotency_key``:
    unique per owner, as ``submit``'s (an ``IntegrityError`` when taken)."""
    now = now or utc_now()
    job_id = job_id or new_job_id()
    with write(engine) as connection:
        row = connection.execute(insert(jobs).values(
            id=job_id, owner=owner, status=PROCESSING, input=input, created_at=now, started_at=now,
            expires_at=now + retention_for(connection, owner, retention), attempts=1, claim_owner=CLIENT_HELD + holder,
            claim_expires_at=now + timedelta(seconds=lease_seconds), last_event_seq=2, idempotency_key=idempotency_key,
        ).returning(*jobs.c)).one()
        connection.execute(insert(job_events), [
            {"job_id": job_id, "seq": 1, "kind": EVENT_STATUS, "data": {"status": STARTING}, "at": now},
            {"job_id": job_id, "seq": 2, "kind": EVENT_STATUS, "data": {"status": PROCESSING, "attempt": 1}, "at": now},
        ])
    return Job.from_row(row)


def by_key(connection: Connection, owner: str, key: str) -> tuple[Job, str | None] | None:
    """``owner``'s job submitted with the ``Idempotency-Key`` ``key``, with its body's hash (None: no such job)."""
    row = connection.execute(select(jobs).where(jobs.c.owner == owner, jobs.c.idempotency_key == key)).one_or_none()
    return None if row is None else (Job.from_row(row), row.body_hash)


def ids_by_key(engine: Engine, key: str) -> list[str]:
    """The ids of the jobs submitted with the ``Idempotency-Key`` ``key``, whoever's (a key the server made, such
    as a Gradio event's, names one job)."""
    with read(engine) as connection:
        return list(connection.execute(select(jobs.c.id).where(jobs.c.idempotency_key == key)).scalars())


def _replayed(earlier: tuple[Job, str | None], key: str, body_hash: str | None) -> Job:
    job, earlier_hash = earlier
    if earlier_hash != body_hash:
        raise IdempotencyConflict(key, job.id)
    return job


def get(engine: Engine, job_id: str) -> Job:
    """The job ``job_id``; ``JobGone`` when its retention ran out, ``JobNotFound`` when there never was one."""
    with read(engine) as connection:
        row = connection.execute(select(jobs).where(jobs.c.id == job_id)).one_or_none()
        if row is not None:
            return Job.from_row(row)
        if (gone := connection.execute(select(tombstones.c.owner).where(tombstones.c.id == job_id)).first()):
            raise JobGone(job_id, gone.owner)
    raise JobNotFound(job_id)


def list_newest_first(engine: Engine, owner: str, cursor: str | None = None, limit: int = 20,
                      only: JobFilter | None = None) -> Page:
    """``owner``'s jobs (those ``only`` lets through), newest first, ``limit`` (at most ``PAGE_LIMIT_MAX``) at a
    time; pass the page's ``next_cursor`` (with the same filter) for the next one. Keyset paging on the
    acceptance order: a job accepted or deleted meanwhile never shifts a later page, and no page costs more
    than the rows it skips by index."""
    limit = max(1, min(limit, PAGE_LIMIT_MAX))
    query = (select(jobs).where(jobs.c.owner == owner, *_conditions(only or JobFilter()))
             .order_by(jobs.c.seq.desc()).limit(limit + 1))
    if cursor is not None:
        query = query.where(jobs.c.seq < _decode_cursor(cursor))
    with read(engine) as connection:
        found = [Job.from_row(row) for row in connection.execute(query)]
    more = len(found) > limit
    return Page(found[:limit], _encode_cursor(found[limit - 1].seq) if more else None)


def _conditions(only: JobFilter) -> list[ColumnElement[bool]]:
    """The WHERE terms of a listing's filter (the date range uses the index on owner and acceptance time)."""
    conditions = []
    if only.since is not None:
        conditions.append(jobs.c.created_at >= only.since)
    if only.until is not None:
        conditions.append(jobs.c.created_at < only.until)
    if only.preset:
        conditions.append(jobs.c.input["preset"].as_string() == only.preset)
    if only.text:
        prompt = func.lower(jobs.c.input["prompt"].as_string())
        conditions.append(prompt.contains(only.text.lower(), autoescape=True))
    if only.key is not None:
        conditions.append(jobs.c.idempotency_key == only.key)
    return conditions


def _encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"jobs:{seq}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, _, seq = text.partition(":")
        if prefix != "jobs" or not seq.isdigit():
            raise ValueError(text)
        return int(seq)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidCursor() from None
