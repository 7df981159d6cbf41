"""A bound on the parts (files) of one multipart request, such as an upload to Gradio.

Gradio's upload route takes up to 1000 files per request (a fixed number in its multipart
parser, not a setting), each written to a folder of its own: 100 requests of 1000 tiny files
left 200,000 inodes in the cache. ``UploadFileLimit`` is ASGI middleware that counts the part
delimiters of a ``multipart/form-data`` body as it streams in and refuses the request (413,
``too_many_files``) as soon as it holds more than ``max_files`` parts. It raises
``RequestRefused`` from the body it hands on, so it must sit outside ``RequestGuard``: the
guard then answers, and the multipart parser deletes the files it had written.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from webui.web.request_body import RequestRefused


def part_delimiter(scope: Scope) -> bytes | None:
    """``--BOUNDARY`` of a multipart body, or None for any other request."""
    media, _, options = Headers(scope=scope).get("content-type", "").partition(";")
    if media.strip().lower() != "multipart/form-data":
        return None
    for option in options.split(";"):
        name, _, value = option.strip().partition("=")
        if name.lower() == "boundary" and value.strip('"'):
            return b"--" + value.strip('"').encode("latin-1")
    return None


class PartCounter:
    """Counts ``delimiter`` in a byte stream fed in chunks (a delimiter may span two chunks)."""

    def __init__(self, delimiter: bytes) -> None:
        self.delimiter = delimiter
        self.count = 0
        self._tail = b""

    def feed(self, chunk: bytes) -> int:
        """Add ``chunk``; the delimiters seen so far."""
        window = self._tail + chunk
        self.count += window.count(self.delimiter)
        self._tail = window[-(len(self.delimiter) - 1):]
        return self.count


class UploadFileLimit:
    """ASGI middleware: at most ``max_files`` parts in one multipart request body."""

    def __init__(self, app: ASGIApp, max_files: int) -> None:
        self.app = app
        self.max_files = max_files

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        delimiter = part_delimiter(scope) if scope["type"] == "http" else None
        if delimiter is None:
            await self.app(scope, receive, send)
            return
        counter = PartCounter(delimiter)

        async def counted() -> Message:
            message = await receive()
            # n parts have n + 1 delimiters: the last one closes the body
            if counter.feed(message.get("body", b"")) > self.max_files + 1:
                raise RequestRefused(413, "too_many_files", f"files: at most {self.max_files} files per upload; "
                                     "send fewer at a time.")
            return message

        await self.app(scope, counted, send)
