"""Why a job did not run or did not finish: the worker's domain errors, free of HTTP.

The scheduler and the generation service raise these; the worker app alone turns them into
HTTP statuses (``webui.worker.http_error``). ``str(error)`` is a sentence for the user.
"""

from __future__ import annotations


class JobError(Exception):
    """A job was refused or failed; ``code`` names the reason in error bodies and logs."""

    code = "job_failed"

    def __init__(self, detail: str, retry_after: int | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retry_after = retry_after
        """Seconds after which the same job may succeed here, when that can be said."""


class NotReady(JobError):
    """The worker takes no jobs now (loading, warming up, restarting or shutting down)."""

    code = "not_ready"


class QueueFull(JobError):
    """One job runs and the queue behind it is full."""

    code = "busy"


class OutOfMemory(JobError):
    """The job ran out of device memory; a smaller one may fit."""

    code = "out_of_memory"


class GenerationFailed(JobError):
    """The pipeline failed for an unexpected reason (its traceback is in the worker log)."""

    code = "generation_failed"


class ModelLoadError(Exception):
    """The model or its LoRA is missing, unreachable or malformed; the message is one line."""


class JobCancelled(Exception):
    """The job was dropped because its client went away (before or while it ran)."""


def one_line(exc: BaseException, limit: int = 300) -> str:
    """``Type: first line of the message`` (at most ``limit`` characters), for messages that must fit one line."""
    text = str(exc).strip().splitlines()
    return (f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__)[:limit]
