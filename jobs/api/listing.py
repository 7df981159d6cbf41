"""A listing's query: its filter (``since``, ``until``, ``preset``, ``q``) and the link to its next page, which
keeps every parameter but the cursor."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated
from urllib.parse import urlencode

from fastapi import Query, Request

from jobs.api.submission import MAX_KEY_CHARS
from jobs.contract import API_PREFIX
from jobs.store import JobFilter

MAX_TEXT_CHARS = 200
"""The longest prompt text a listing filters by."""


def _utc(moment: datetime | None) -> datetime | None:
    """``moment`` with a time zone: one without is UTC."""
    return moment if moment is None or moment.tzinfo else moment.replace(tzinfo=UTC)


def job_filter(
    since: Annotated[datetime | None, Query(description="Accepted at or after this (date or time, UTC unless "
                                             "it says).")] = None,
    until: Annotated[datetime | None, Query(description="Accepted before this.")] = None,
    preset: Annotated[str | None, Query(max_length=100, description="The studio preset it was made with.")] = None,
    q: Annotated[str | None, Query(max_length=MAX_TEXT_CHARS, description="Text in its prompt (any case).")] = None,
    key: Annotated[str | None, Query(max_length=MAX_KEY_CHARS, description="The Idempotency-Key it was submitted "
                                     "with.")] = None,
) -> JobFilter:
    """The listing's filter, from its query parameters."""
    return JobFilter(_utc(since), _utc(until), preset or None, (q or "").strip() or None, key or None)


def next_page(request: Request, cursor: str | None) -> str | None:
    """The URL of the page after ``cursor`` with the same filter and limit (None: this was the last page)."""
    if cursor is None:
        return None
    kept = [(name, value) for name, value in request.query_params.multi_items() if name != "cursor"]
    return f"{API_PREFIX}?{urlencode([*kept, ('cursor', cursor)])}"
