"""What a job on a worker can end in besides a result, and how a worker's (or a proxy's) error answer maps to it.

``WorkerError`` and its kinds are what ``WorkerClient.generate`` raises; ``str(error)`` is a sentence for the user.
``Retryable`` is an attempt's failure that another attempt may fix (``WorkerClient`` retries it, never raises it).
"""

from __future__ import annotations

from typing import Any

import httpx
from pydantic import ValidationError

from webui.contract import OUT_OF_MEMORY_STATUS, RETRYABLE_STATUSES
from webui.schema import ErrorBody


class WorkerError(Exception):
    """A job failed; ``str(error)`` is a sentence for the user."""


class JobRejected(WorkerError):
    """The worker refused the job (bad input, 4xx) or failed it for good; not retried."""

    def __init__(self, message: str, status: int, body: ErrorBody | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


class OutOfMemory(JobRejected):
    """The worker ran out of memory for this job; a smaller job may fit."""


class WorkersUnavailable(WorkerError):
    """No attempt finished the job."""

    def __init__(self, attempts: int, cause: str) -> None:
        super().__init__(f"No worker could finish the job after {attempts} attempts: {cause}")
        self.attempts = attempts
        self.cause = cause


class Retryable(Exception):
    """One attempt failed in a way another attempt may fix."""

    def __init__(self, cause: str, retry_after: float | None = None) -> None:
        super().__init__(cause)
        self.retry_after = retry_after


def error_body(data: Any) -> ErrorBody | None:
    """``data`` as an ``ErrorBody``, or None when it is not one."""
    try:
        return ErrorBody.model_validate(data)
    except ValidationError:
        return None


def retry_after_seconds(response: httpx.Response) -> float | None:
    """The seconds of a ``Retry-After`` header, or None when there is none (or it is not a number)."""
    value = response.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def classify(status: int, body: ErrorBody | None, fallback: str, retry_after: float | None = None) -> Exception:
    """Turn a worker's (or proxy's) error status into what ``WorkerClient.generate`` raises or retries."""
    detail = body.detail if body else fallback
    if status == OUT_OF_MEMORY_STATUS or (body is not None and body.error == "out_of_memory"):
        return OutOfMemory(
            f"The worker ran out of memory: lower the resolution or the number of images. ({detail})",
            status,
            body,
        )
    if status in RETRYABLE_STATUSES:
        return Retryable(f"HTTP {status}: {detail}", retry_after)
    return JobRejected(detail, status, body)
