"""The web front's guard around the Gradio app: every request body bounded in bytes and time.

``RequestGuard`` is ASGI middleware added inside the mounted Gradio app (so that it sits below
Gradio's own catch-all 500 handler and can still answer). For every HTTP request it:

- counts the body's real bytes, whatever the framing (``Content-Length`` or chunked), and
  answers 413 once they pass ``max_body_bytes``;
- gives the whole body ``body_timeout`` seconds: a client trickling bytes gets 408, so it
  cannot hold a connection (and memory) for as long as it likes;
- logs a client that disconnects mid-body as one line with nginx's 499, not a traceback;
- checks the shape of a ``queue/join`` body before Gradio sees it (a JSON object whose
  ``fn_index``, when given, names one of the page's events), so a bad index is a 422, not a
  ``KeyError`` with a traceback;
- turns an error that escapes Gradio before any response was sent into a JSON answer: 400
  for a malformed upload, else 500 naming the request id (the traceback stays in the log);
- counts each session's open event streams (``queue/data``) in ``EventStreams``, so that a
  job whose client never listens, or stopped listening, can be cancelled.

Every answer is an ``ErrorBody``-shaped JSON object: ``{"error", "detail", "fields"}``.
Starlette's own ``RequestBodyLimitMiddleware`` covers only the first point, in plain text.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable, Collection
from urllib.parse import parse_qs

from starlette.formparsers import MultiPartException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from webui.contract import CLIENT_GONE_STATUS
from webui.web.presence import EventStreams

logger = logging.getLogger(__name__)

MAX_JOIN_BYTES = 1024 * 1024
"""Largest ``queue/join`` body: component values and file references, never file contents."""


class RequestRefused(MultiPartException):
    """The request is refused before the app answers; ``status`` 499 means nobody is told.

    A ``MultiPartException``, so that a multipart parser reading the body when this comes out
    of it (Starlette's, Gradio's upload route) deletes the partial files it wrote, as it does
    for its own parse errors; the guard then answers in place of the parser.
    """

    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail


def error_response(status: int, error: str, detail: str) -> JSONResponse:
    """An ``ErrorBody``-shaped JSON response."""
    headers = {"Connection": "close"} if status in (408, 413) else None
    return JSONResponse({"error": error, "detail": detail, "fields": []}, status_code=status, headers=headers)


def event_stream_key(scope: Scope) -> str | None:
    """The session a Gradio event stream listens for: ``queue/data?session_hash=…`` (the page,
    gradio_client), or ``GET call/<api>/<event id>`` (the curl-style API, whose session is the
    event's own id); None for any other request."""
    path = scope["path"]
    if path.endswith("/queue/data"):
        return parse_qs(scope.get("query_string", b"").decode("latin-1")).get("session_hash", [""])[0]
    parts = path.strip("/").split("/")
    if scope["method"] == "GET" and len(parts) >= 3 and parts[-3] == "call":
        return parts[-1]
    return None


class _BodyReader:
    """``receive`` for one request, bounded in bytes and time (raises ``RequestRefused``)."""

    def __init__(self, receive: Receive, max_bytes: int, timeout: float) -> None:
        self._receive = receive
        self.max_bytes = max_bytes
        self.deadline = time.monotonic() + timeout
        self.timeout = timeout
        self.size = 0
        self.complete = False
        self.refused: RequestRefused | None = None
        """Set when the body was refused (the app may have caught it and answered on its own)."""

    async def __call__(self) -> Message:
        try:
            return await self._next()
        except RequestRefused as refused:
            self.refused = refused
            raise

    async def _next(self) -> Message:
        if self.complete:  # the body is in; later calls wait for the disconnect, unbounded
            return await self._receive()
        try:
            message = await asyncio.wait_for(self._receive(), max(0.0, self.deadline - time.monotonic()))
        except TimeoutError:
            raise RequestRefused(
                408, "request_timeout", f"The request body was not received within {self.timeout:g} s."
            ) from None
        if message["type"] == "http.disconnect":
            raise RequestRefused(CLIENT_GONE_STATUS, "client_gone", "the client left before sending its body")
        self.size += len(message.get("body", b""))
        if self.size > self.max_bytes:
            raise RequestRefused(413, "request_too_large", f"The request body is larger than {self.max_bytes} bytes.")
        self.complete = not message.get("more_body", False)
        return message

    async def read_all(self) -> bytes:
        """The whole body (for small bodies the guard inspects itself)."""
        chunks = []
        while not self.complete:
            chunks.append((await self()).get("body", b""))
        return b"".join(chunks)


class RequestGuard:
    """ASGI middleware: bounded request bodies, checked Gradio join bodies, JSON errors."""

    def __init__(
        self,
        app: ASGIApp,
        max_body_bytes: int,
        body_timeout: float,
        event_ids: Callable[[], Collection[int]],
        streams: EventStreams,
    ) -> None:
        """``event_ids``: the ``fn_index`` values the page's events have (asked per join)."""
        self.streams = streams
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.body_timeout = body_timeout
        self.event_ids = event_ids

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        listener = event_stream_key(scope)
        if listener is None:
            await self._guarded(scope, receive, send)
            return
        self.streams.opened(listener)
        try:
            await self._guarded(scope, receive, send)
        finally:
            self.streams.closed(listener)

    async def _guarded(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        reader = _BodyReader(receive, self.max_body_bytes, self.body_timeout)
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if reader.refused is not None and not started:
                return  # the app's own answer to a refused body (e.g. Gradio's plain 400): ours goes out
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            app_receive: Receive = reader
            if scope["method"] == "POST" and path.endswith("/queue/join"):
                app_receive = await self._checked_join(reader)
            await self.app(scope, app_receive, tracking_send)
            if reader.refused is not None:
                raise reader.refused
        except RequestRefused as refused:
            self._refused(scope, refused)
            if not started and refused.status != CLIENT_GONE_STATUS:
                await error_response(refused.status, refused.error, refused.detail)(scope, receive, send)
        except Exception as exc:
            if started:
                raise
            await self._unexpected(scope, exc)(scope, receive, send)

    async def _checked_join(self, reader: _BodyReader) -> Receive:
        """Read and check a ``queue/join`` body; a ``receive`` that replays it to Gradio."""
        reader.max_bytes = min(reader.max_bytes, MAX_JOIN_BYTES)
        body = await reader.read_all()
        try:
            data = json.loads(body)
        except ValueError:
            raise RequestRefused(422, "invalid_json", "The queue/join body is not valid JSON.") from None
        if not isinstance(data, dict):
            raise RequestRefused(422, "invalid_json", "The queue/join body must be a JSON object.")
        fn_index = data.get("fn_index")
        if fn_index is not None and (type(fn_index) is not int or fn_index not in self.event_ids()):
            raise RequestRefused(422, "invalid_request", "fn_index: no such event on this page.")
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await reader()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        return replay

    @staticmethod
    def _refused(scope: Scope, refused: RequestRefused) -> None:
        logger.info("%s %s -> %d %s: %s", scope["method"], scope["path"], refused.status, refused.error,
                    refused.detail)

    @staticmethod
    def _unexpected(scope: Scope, exc: Exception) -> JSONResponse:
        """The answer to an error that escaped the app before it answered."""
        if scope["path"].endswith("/upload"):
            logger.info("POST %s -> 400: malformed upload (%s)", scope["path"], type(exc).__name__)
            return error_response(400, "invalid_upload", "files: every 'files' part must be a file.")
        request_id = uuid.uuid4().hex
        logger.error("unexpected %s in %s %s (request id %s)", type(exc).__name__, scope["method"], scope["path"],
                     request_id, exc_info=exc)
        detail = f"Unexpected error; it is in the log under request id {request_id}."
        return error_response(500, "internal_error", detail)
