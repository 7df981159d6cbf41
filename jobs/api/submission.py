"""A submission checked at the boundary: the body (bounded, JSON), the job's fields (the worker's own checks),
the webhook (the target guard, the events filter), the ``Idempotency-Key`` and ``Prefer: wait=N`` headers.

Every problem becomes one 422 naming each field (``webui.worker.job_parsing``'s shape and helpers).
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from typing import Any

from fastapi import Request

from jobs.api.models import MAX_PRESET_CHARS, PRESET_FIELD, WEBHOOK_FIELDS
from jobs.contract import MAX_BODY_BYTES, MAX_WAIT_S
from jobs.webhooks.events import parse_events_filter
from jobs.webhooks.targets import TargetGuard, TargetRefused
from webui.contract import PHOTO_FIELD
from webui.schema import MAX_SEED, Limits
from webui.worker.job_parsing import ApiError, invalid_request, parse_payload, read_body, validate_job

MAX_KEY_CHARS = 64
"""The longest ``Idempotency-Key``."""


@dataclass(frozen=True)
class Submission:
    """A checked job: what the store records, and what makes a replay of it recognisable."""

    input: dict[str, Any]
    """The worker's fields (a random seed filled in, so that every attempt draws the same image) and the webhook."""
    body_hash: str
    """SHA-256 of the fields as sent (canonical JSON): the same request has the same hash."""
    idempotency_key: str | None


def idempotency_key(request: Request) -> str | None:
    """The ``Idempotency-Key`` header: 1 to ``MAX_KEY_CHARS`` visible ASCII characters, or absent."""
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    if not 1 <= len(key) <= MAX_KEY_CHARS or not all(33 <= ord(char) <= 126 for char in key):
        problem = {"field": "Idempotency-Key", "message": f"must be 1 to {MAX_KEY_CHARS} visible ASCII characters"}
        raise invalid_request([problem])
    return key


def prefer_wait(request: Request) -> float | None:
    """Seconds from ``Prefer: wait=N`` (RFC 7240), at most ``MAX_WAIT_S``; None when not asked (or unreadable)."""
    for preference in ",".join(request.headers.getlist("prefer")).split(","):
        name, _, value = preference.split(";")[0].strip().partition("=")
        if name.lower() == "wait":
            try:
                return min(max(float(value.strip().strip('"')), 0.0), MAX_WAIT_S)
            except ValueError:
                return None
    return None


def photo_allowance(limits: Limits) -> int:
    """Bytes a retouch photo may add to a job's body: the workers' largest upload, base64-encoded."""
    return (limits.max_upload_bytes + 2) // 3 * 4


def check_webhook(fields: dict[str, Any], guard: TargetGuard) -> list[dict[str, str]]:
    """Problems with the webhook fields: a refused target, an unknown event."""
    problems = []
    url, words = fields.get("webhook"), fields.get("webhook_events_filter")
    if url is not None:
        try:
            guard.check_url(url) if isinstance(url, str) else guard.check_url("")
        except TargetRefused as refused:
            problems.append({"field": "webhook", "message": str(refused)})
    if words is not None:
        try:
            if not isinstance(words, list) or not all(isinstance(word, str) for word in words):
                raise ValueError("must be a list of event names")
            parse_events_filter(words)
        except ValueError as error:
            problems.append({"field": "webhook_events_filter", "message": str(error)})
    return problems


async def read_submission(request: Request, limits: Limits, guard: TargetGuard,
                          max_body: int = MAX_BODY_BYTES) -> Submission:
    """The checked job in ``request``; ``ApiError`` (413/415/422) in words when it is not one."""
    key = idempotency_key(request)
    body = await read_body(request, max_body + photo_allowance(limits))
    payload = parse_payload(body, request.headers.get("content-type", ""), {})
    if len(body) > max_body and not payload.get(PHOTO_FIELD):
        raise ApiError(413, "body_too_large", f"The request body is larger than {max_body} bytes (only a retouch "
                       "job's photo may make it larger).")
    body_hash = hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    webhook = {name: payload.pop(name) for name in WEBHOOK_FIELDS if name in payload}
    preset = payload.pop(PRESET_FIELD, None)
    if problems := check_webhook(webhook, guard) + check_preset(preset):
        raise invalid_request(problems)
    job = validate_job(payload, limits)
    fields = job.model_dump(exclude_none=True)
    fields.setdefault("seed", secrets.randbelow(MAX_SEED + 1))
    labels = {**webhook, PRESET_FIELD: preset or None}
    return Submission({**fields, **{k: v for k, v in labels.items() if v is not None}}, body_hash, key)


def check_preset(preset: object) -> list[dict[str, str]]:
    """Problems with the ``preset`` label: text of at most ``MAX_PRESET_CHARS`` characters, or absent."""
    if preset is None or (isinstance(preset, str) and len(preset) <= MAX_PRESET_CHARS):
        return []
    return [{"field": PRESET_FIELD, "message": f"must be text of at most {MAX_PRESET_CHARS} characters"}]

