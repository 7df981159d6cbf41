"""A request body bounded in bytes and time, and the refusal the web front answers with.

``BodyReader`` is the ``receive`` an app gets for one request: it counts the body's real bytes,
whatever the framing (``Content-Length`` or chunked), and gives the whole body a deadline; past
either it raises ``RequestRefused`` (413, 408; 499 when the client left mid-body), which
``RequestGuard`` turns into an ``ErrorBody``-shaped JSON answer (``error_response``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from starlette.formparsers import MultiPartException
from starlette.responses import JSONResponse
from starlette.types import Message, Receive

from webui.contract import CLIENT_GONE_STATUS


class RequestRefused(MultiPartException):
    """The request is refused before the app answers; ``status`` 499 means nobody is told.

    A ``MultiPartException``, so that a multipart parser reading the body when this comes out
    of it (Starlette's, Gradio's upload route) deletes the partial files it wrote, as it does
    for its own parse errors; the guard then answers in place of the parser.
    """

    def __init__(self, status: int, error: str, detail: str, fields: Sequence[str] = ()) -> None:
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail
        self.fields = list(fields)


def error_response(status: int, error: str, detail: str, fields: Sequence[str] = ()) -> JSONResponse:
    """An ``ErrorBody``-shaped JSON response."""
    headers = {"Connection": "close"} if status in (408, 413) else None
    return JSONResponse({"error": error, "detail": detail, "fields": list(fields)}, status_code=status,
                        headers=headers)


class BodyReader:
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
