"""Web fronts that hand a Gradio client on to another one (``--jobs-url``): what lets a rolling restart replace a
web front whose clients are never idle, without failing any of their calls.

A Gradio call is several requests to one web front (join, event stream, file download), and a client that is
never idle always has one under way. So, with the jobs service behind every web front:

- a stopping web front (SIGTERM, ``HandoffServer``) refuses what would start a call here (join, upload) with a
  retryable 503, finishes the calls already joined here (their event streams and downloads), and exits once it has
  none left and no request came for ``LINGER`` seconds (the supervisor's stop grace bounds it);
- any web front answers 503 to an event stream of a session that has no call here (and never had one, or the front
  is stopping), and to a download of a file in another local web front's cache (a sibling folder of its own: the
  sidecar gives each its own).

HAProxy retries such a 503 on another web front (the webs backend's ``retry-on 503``), where the client's call is:
the affinity key (the stale cookie's value, then the ``session_hash``) sends each of its requests to the same one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs, unquote

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from webui.contract import ADOPT_PATH, CLIENT_ID, HEARTBEAT_PREFIX, QUEUE_DATA_PATH, QUEUE_JOIN_PATH
from webui.traffic import UNCOUNTED

logger = logging.getLogger(__name__)

LINGER = 1.0
"""Seconds a stopping web front waits with no call of its own and no request before it exits (its last result's
download comes right after the result)."""
POLL = 0.1
"""Seconds between two looks while a stopping web front waits."""
STARTS = (QUEUE_JOIN_PATH, "/gradio_api/upload", ADOPT_PATH)
FILE = "/gradio_api/file="


class Handoff:
    """What a web front hands on (the 503s of the module doc), and whether a stopping one may exit."""

    def __init__(self, calls: Callable[[str | None], int], cache_dir: Path, knows: Callable[[str], bool]) -> None:
        """``calls(session_hash)``: the Gradio calls joined here and not yet answered (``None``: all sessions);
        ``cache_dir``: this web front's cache, in the folder of every local web front's (the sidecar's layout);
        ``knows(session_hash)``: whether that session joined a call here since this web front started."""
        self.calls, self.cache_dir, self.knows = calls, cache_dir.resolve(), knows
        self.closing = False
        self.in_flight = 0
        self.last_request = time.monotonic()

    def refusal(self, path: str, query: str) -> str | None:
        """Why this request belongs on another web front, or None."""
        if self.closing and path.endswith(STARTS):
            return "This web front is stopping; another one takes the request."
        if path.endswith(QUEUE_DATA_PATH):
            session = (parse_qs(query).get("session_hash") or [None])[0]
            if (session is not None and CLIENT_ID.fullmatch(session) and not self.calls(session)  # bad id: a 422
                    and (self.closing or not self.knows(session))):
                # A session of this running front may open its stream just after its last call ended here (the
                # page's client then holds it for its next call): refused, that page lost every later result.
                return "No call of this session runs on this web front."
        elif FILE in path:
            wanted = Path(unquote(path.split(FILE, 1)[1]))
            where = wanted.resolve()
            if where.is_relative_to(self.cache_dir.parent) and not where.is_relative_to(self.cache_dir):
                return "This file was made by another web front."
        return None

    @staticmethod
    async def refuse(detail: str, send: Send) -> None:
        body = json.dumps({"error": "not on this web front", "detail": detail, "fields": []}).encode()
        headers = [(b"content-type", b"application/json"), (b"retry-after", b"1"),
                   (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def idle(self) -> bool:
        """No call joined here unanswered, no request under way, none for ``LINGER`` s."""
        return not self.calls(None) and not self.in_flight and time.monotonic() - self.last_request >= LINGER


class HandOn:
    """ASGI middleware: answers ``Handoff.refusal`` with a retryable 503; counts the requests it lets through but the
    probes and heartbeat streams (an event stream is let through only while its session has a call here, and ends
    with it)."""

    def __init__(self, app: ASGIApp, handoff: Handoff) -> None:
        self.app, self.handoff = app, handoff

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self.handoff.refusal(scope["path"], scope.get("query_string", b"").decode("latin-1"))
        if refusal is not None:
            await self.handoff.refuse(refusal, send)
            return
        if scope["path"].startswith(HEARTBEAT_PREFIX) or scope["path"] in UNCOUNTED:
            # A heartbeat is open as long as the page is; HAProxy's checks come every second, for ever.
            await self.app(scope, receive, send)
            return
        self.handoff.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.handoff.in_flight -= 1
            self.handoff.last_request = time.monotonic()


class HandoffServer(uvicorn.Server):
    """uvicorn, whose first SIGTERM/SIGINT closes the web front to new calls and stops it once ``Handoff.idle``
    (a second one stops it at once)."""

    def __init__(self, config: uvicorn.Config, handoff: Handoff) -> None:
        super().__init__(config)
        self.handoff = handoff
        self._closing: asyncio.Task | None = None

    def handle_exit(self, sig: int, frame: object) -> None:
        if self.handoff.closing:
            super().handle_exit(sig, frame)
            return
        self.handoff.closing = True
        logger.info("stopping: no new calls here; finishing the calls under way")
        loop = asyncio.get_running_loop()
        loop.call_soon_threadsafe(self._start_closing, sig, frame)

    def _start_closing(self, sig: int, frame: object) -> None:
        self._closing = asyncio.get_running_loop().create_task(self._close_when_idle(sig, frame))

    async def _close_when_idle(self, sig: int, frame: object) -> None:
        started = time.monotonic()
        while not self.handoff.idle():
            await asyncio.sleep(POLL)
        logger.info("stopping: the calls under way ended after %.1f s", time.monotonic() - started)
        super().handle_exit(sig, frame)
