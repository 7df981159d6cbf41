"""A job's webhook events, their filter and the payload (the store keeps progress events rare).

Like Replicate: ``webhook_events_filter`` names the events a client wants (``start``, ``output`` (progress),
``logs``, ``completed``); the body of every event is the job's public JSON as ``GET /v1/jobs/{id}`` shows it at
that moment, so a receiver tells events apart by the job's ``status``. No ``logs`` events are sent (a generation
has no log stream); the word is accepted so Replicate clients work unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from enum import Enum
from typing import Any

from jobs.contract import WEBHOOK_DEFAULT_EVENTS
from jobs.store.outbox import message_id as store_message_id


class WebhookEvent(str, Enum):
    START = "start"
    OUTPUT = "output"
    LOGS = "logs"
    COMPLETED = "completed"


DEFAULT_EVENTS = frozenset(WebhookEvent(word) for word in WEBHOOK_DEFAULT_EVENTS)
"""What a webhook receives when the client gives no filter; progress (``output``) only when asked."""


def parse_events_filter(words: Iterable[str] | None) -> frozenset[WebhookEvent]:
    """The events named in a ``webhook_events_filter``; ``ValueError`` names the unknown ones."""
    if words is None:
        return DEFAULT_EVENTS
    words = list(words)
    known = {event.value for event in WebhookEvent}
    unknown = [word for word in words if word not in known]
    if unknown:
        raise ValueError(f"unknown webhook events {unknown}; use any of start, output, logs, completed")
    if not words:
        raise ValueError("webhook_events_filter is empty; leave it out for start and completed")
    return frozenset(WebhookEvent(word) for word in words)


def message_id(job_id: str, event: WebhookEvent, sequence: int = 0) -> str:
    """The ``webhook-id`` of one event of one job: the same on every retry, so receivers can drop duplicates."""
    return store_message_id(job_id, event.value, sequence)


def payload(job: Mapping[str, Any]) -> bytes:
    """The request body: the job's public JSON, compact UTF-8 (signed byte for byte)."""
    return json.dumps(job, ensure_ascii=False, separators=(",", ":")).encode("utf-8")

