"""The web front's client for a worker's streaming API, with retries.

``WorkerClient.generate`` runs one job over ``POST /generate/stream`` (NDJSON events, see
``webui.schema``), reports each denoising step to a callback and returns the finished
``GenerationResult``. A job that fails for a reason another attempt can fix (connection
refused or reset, a stream cut off before its result, 502/503/504 from a worker or from
HAProxy) is sent again, with the same seed so that the retry draws the same image. Bad
input (422) and out-of-memory are not retried: the caller gets a ``JobRejected`` or
``OutOfMemory`` whose message is meant for the user. When every attempt fails the caller
gets one ``WorkersUnavailable`` naming the attempts and the last cause.

One client per web app (it owns an ``httpx.AsyncClient``); close it with ``aclose()``.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import httpx
from pydantic import Field, TypeAdapter, ValidationError

from webui.contract import INFO_PATH, MINIMAL_RESULT
from webui.queue_client import queue_http
from webui.schema import MAX_SEED, ErrorEvent, GenerationResult, ProgressEvent, ResultEvent, WorkerInfo
from webui.web.worker_errors import (
    JobRejected,
    Retryable,
    WorkersUnavailable,
    classify,
    error_body,
    retry_after_seconds,
)

logger = logging.getLogger(__name__)

MAX_RETRY_AFTER = 10.0
"""Longest wait (seconds) a worker's ``Retry-After`` may impose between two attempts."""

MINIMAL = {"Prefer": MINIMAL_RESULT}
"""The web front reads ``images`` only; the worker leaves out ``image`` (``MINIMAL_RESULT``)."""

StreamEvent = Annotated[ProgressEvent | ResultEvent | ErrorEvent, Field(discriminator="event")]
_EVENT = TypeAdapter(StreamEvent)

ProgressCallback = Callable[[int, int, str], None]
"""Called with (step, total, worker_id) when a job starts (step 0) and after each step."""

RetryCallback = Callable[[int, int, str], None]
"""Called with (next attempt, max attempts, cause) before an attempt is retried."""


@dataclass(frozen=True)
class JobOutcome:
    """A finished job, with how it was obtained."""

    result: GenerationResult
    attempts: int
    elapsed_ms: float
    """Wall time at the client, from the first attempt to the result."""


class WorkerClient:
    """Runs generation jobs on a worker (or a balancer in front of workers), with retries."""

    def __init__(
        self,
        base_url: str,
        max_attempts: int = 3,
        retry_delay: float = 0.5,
        timeout: float = 600.0,
        connect_timeout: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
        ca_file: Path | None = None,
        cert_file: Path | None = None,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.base_url = base_url.rstrip("/")
        self.max_attempts = max_attempts
        self.retry_delay = retry_delay
        self.timeout = timeout
        self._http = queue_http(self.base_url, timeout, connect_timeout, ca_file, cert_file, transport)

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def info(self, timeout: float = 2.0) -> WorkerInfo | str:
        """``GET /info``: what the workers serve, or why none answered (a sentence)."""
        try:
            response = await self._http.get(INFO_PATH, timeout=timeout)
            if response.status_code == 200:
                return WorkerInfo.model_validate(response.json())
            body = error_body(response.json())
            return body.detail if body else f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            return f"workers unreachable ({type(exc).__name__})"
        except (ValueError, ValidationError):
            return f"unexpected answer from {INFO_PATH}"

    async def generate(
        self,
        request: Mapping[str, Any],
        on_progress: ProgressCallback | None = None,
        on_retry: RetryCallback | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> JobOutcome:
        """Run one job (fields of ``GenerationRequest``) until it succeeds or may not be retried.

        A missing or ``None`` seed is replaced by a random one first, so every attempt
        draws the same image. ``headers`` go with every attempt (e.g. ``X-Request-ID``).
        Raises ``JobRejected`` (including ``OutOfMemory``) or ``WorkersUnavailable``.
        """
        payload = {key: value for key, value in request.items() if value is not None}
        payload.setdefault("seed", secrets.randbelow(MAX_SEED + 1))
        started = time.monotonic()
        cause = "no attempt was made"
        for attempt in range(1, self.max_attempts + 1):
            try:
                result = await self._attempt(payload, on_progress, {**(headers or {}), **MINIMAL})
            except Retryable as exc:
                cause, retry_after = str(exc), exc.retry_after
            else:
                return JobOutcome(result, attempt, (time.monotonic() - started) * 1000)
            if attempt == self.max_attempts:
                break
            delay = self.retry_delay
            if retry_after is not None:
                delay = min(max(retry_after, self.retry_delay), MAX_RETRY_AFTER)
            logger.warning(
                "job attempt %d/%d failed (%s); retrying in %.2fs with seed %s",
                attempt, self.max_attempts, cause, delay, payload["seed"],
            )
            if on_retry is not None:
                on_retry(attempt + 1, self.max_attempts, cause)
            await asyncio.sleep(delay)
        logger.error("job failed after %d attempts: %s", self.max_attempts, cause)
        raise WorkersUnavailable(self.max_attempts, cause)

    async def _attempt(self, payload: dict[str, Any], on_progress: ProgressCallback | None,
                       headers: Mapping[str, str]) -> GenerationResult:
        """One request to ``/generate/stream``; raises ``Retryable`` for failures worth retrying."""
        try:
            async with self._http.stream("POST", "/generate/stream", json=payload, headers=headers) as response:
                if response.status_code != 200:
                    await response.aread()
                    raise self._status_error(response)
                async for line in response.aiter_lines():
                    if not line.strip():
                        continue
                    event = self._parse(line)
                    if isinstance(event, ProgressEvent):
                        if on_progress is not None:
                            on_progress(event.step, event.total, event.worker_id)
                    elif isinstance(event, ResultEvent):
                        return event.result
                    else:
                        raise classify(event.status, event.error, event.error.detail)
        except httpx.TimeoutException as exc:
            raise Retryable(f"worker timed out ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            raise Retryable(f"connection to the worker failed ({type(exc).__name__}: {exc})") from exc
        raise Retryable("the worker's stream ended before the result")

    @staticmethod
    def _status_error(response: httpx.Response) -> Exception:
        try:
            body = error_body(response.json())
        except ValueError:
            body = None
        fallback = response.reason_phrase or "error"
        return classify(response.status_code, body, fallback, retry_after_seconds(response))

    @staticmethod
    def _parse(line: str) -> ProgressEvent | ResultEvent | ErrorEvent:
        try:
            # One pass in pydantic-core: about half the time of json.loads + validate_python for
            # a result line, which carries the base64 PNG (megabytes at 1024²).
            return _EVENT.validate_json(line)
        except (ValueError, ValidationError) as exc:
            raise JobRejected(f"The worker sent an unreadable event: {line[:200]!r}", 502) from exc


class WorkerInfoCache:
    """The workers' ``/info`` answer, asked at most once per ``ttl`` seconds."""

    def __init__(self, client: WorkerClient, ttl: float = 2.0) -> None:
        self.client = client
        self.ttl = ttl
        self._lock = asyncio.Lock()
        self._answer: WorkerInfo | str | None = None
        self._asked_at = float("-inf")

    async def get(self) -> WorkerInfo | str:
        """What the workers serve, or why none answered; fresh when older than ``ttl``."""
        async with self._lock:
            if self._answer is None or time.monotonic() - self._asked_at >= self.ttl:
                self._answer = await self.client.info()
                self._asked_at = time.monotonic()
            return self._answer
