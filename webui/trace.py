"""One id through every hop: the request id (``X-Request-ID``) and job id (``X-Job-Id``) of the work in hand.

HAProxy gives each request an id and passes it on; each process reads it at its edge (``TraceIds``, or ``bound``
where work runs outside the request, e.g. Gradio's queue), every log line it writes meanwhile carries it
(``webui.log_setup``), and ``trace_headers()`` hands it to the next hop. An id is kept only in ``ID_SHAPE``:
whatever else a header holds becomes a new id, so a client cannot write into a log line.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar, copy_context
from functools import partial
from typing import Any

import httpx
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_ID_HEADER = "X-Request-ID"
JOB_ID_HEADER = "X-Job-Id"
ID_SHAPE = re.compile(r"[A-Za-z0-9._:-]{1,64}")
"""What an id may look like (HAProxy's UUIDs, ours, job ids): nothing a log line or a header could be split by."""

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
job_id: ContextVar[str | None] = ContextVar("job_id", default=None)


def valid_id(value: str | bytes | None) -> str | None:
    """``value`` when it has ``ID_SHAPE``, else None."""
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    return value if value is not None and ID_SHAPE.fullmatch(value) else None


def new_request_id() -> str:
    return uuid.uuid4().hex


def headers_ids(headers: Mapping[str, str] | list[tuple[bytes, bytes]]) -> tuple[str, str | None]:
    """The request id (a new one unless exactly one valid ``X-Request-ID`` came) and the job id of ``headers``."""
    pairs = [(k.decode("latin-1") if isinstance(k, bytes) else k, v) for k, v in
             (headers.items() if isinstance(headers, Mapping) else headers)]
    given = [v for k, v in pairs if k.lower() == REQUEST_ID_HEADER.lower()]
    jobs = [v for k, v in pairs if k.lower() == JOB_ID_HEADER.lower()]
    return (valid_id(given[0]) if len(given) == 1 else None) or new_request_id(), valid_id(jobs[0] if jobs else None)


@contextmanager
def bound(request: str | None = None, job: str | None = None) -> Iterator[None]:
    """Within this block, log lines and ``trace_headers()`` name ``request`` and ``job`` (None: keep the current)."""
    tokens = [(var, var.set(value)) for var, value in ((request_id, request), (job_id, job)) if value is not None]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def in_context(fn: Callable[..., Any], *args: Any) -> Callable[[], Any]:
    """``fn(*args)`` to run in another thread (``run_in_executor``) with the ids bound here."""
    return partial(copy_context().run, fn, *args)


def trace_headers() -> dict[str, str]:
    """The headers that pass the current ids on to the next hop."""
    ids = {REQUEST_ID_HEADER: request_id.get(), JOB_ID_HEADER: job_id.get()}
    return {name: value for name, value in ids.items() if value is not None}


async def pass_ids_on(request: httpx.Request) -> None:
    """httpx request hook: the current ids go with every request to the next hop (a header given wins)."""
    for name, value in trace_headers().items():
        if name not in request.headers:
            request.headers[name] = value


class TraceIds:
    """ASGI middleware: the request's ids bound for its whole handling, in ``scope["state"]["request_id"]``, and
    the request id echoed in the ``X-Request-ID`` response header."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request, job = headers_ids(scope.get("headers") or [])
        scope.setdefault("state", {})["request_id"] = request

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                message["headers"] = [*headers, (b"x-request-id", request.encode("latin-1"))]
            await send(message)

        with bound(request, job):
            await self.app(scope, receive, send_with_id)
