"""A job's webhook events, their filter, the payload, and the throttle that keeps progress events rare.

Like Replicate: ``webhook_events_filter`` names the events a client wants (``start``, ``output`` (progress),
``logs``, ``completed``); the body of every event is the job's public JSON as ``GET /v1/jobs/{id}`` shows it at
that moment, so a receiver tells events apart by the job's ``status``. No ``logs`` events are sent (a generation
has no log stream); the word is accepted so Replicate clients work unchanged.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
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


class ProgressThrottle:
    """Lets at most one ``output`` event per ``interval_s`` through for each job; every other event passes.

    A ``completed`` event forgets the job. At most ``max_jobs`` jobs are remembered (the oldest go first), so
    jobs that never complete cannot grow it without bound.
    """

    def __init__(self, interval_s: float = 0.5, clock: Callable[[], float] = time.monotonic,
                 max_jobs: int = 10_000) -> None:
        self.interval_s = interval_s
        self.clock = clock
        self.max_jobs = max_jobs
        self._last: OrderedDict[str, float] = OrderedDict()

    def allow(self, job_id: str, event: WebhookEvent) -> bool:
        """True if this event of ``job_id`` should be sent now."""
        if event is WebhookEvent.COMPLETED:
            self._last.pop(job_id, None)
            return True
        if event is not WebhookEvent.OUTPUT:
            return True
        now = self.clock()
        last = self._last.get(job_id)
        if last is not None and now - last < self.interval_s:
            return False
        self._last[job_id] = now
        self._last.move_to_end(job_id)
        while len(self._last) > self.max_jobs:
            self._last.popitem(last=False)
        return True
