"""One API client's event stream, read from its web front and passed on; calls in flight when that front dies go
on at another (``webui.web.studio.adoption``), whose stream the relay reads next."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import aclosing

import httpx

from jobs.relay.calls import Calls
from jobs.relay.messages import CLOSE, Frames, FrameTooLarge, encoded, lost, parsed
from webui.contract import ADOPT_PATH, QUEUE_DATA_PATH
from webui.trace import REQUEST_ID_HEADER

logger = logging.getLogger(__name__)

FORWARDED = frozenset({"cookie", "authorization", "host", "x-forwarded-for", "x-forwarded-proto", "user-agent",
                       "accept", REQUEST_ID_HEADER.lower()})
"""The client's headers a web front sees through the relay: its cookie (the same web front as its other requests),
its login, where it asked (the result's URLs), and the request's id."""
MAX_ADOPTIONS = 3
"""Web fronts that may die under one client's stream before the relay gives its calls up."""
NO_FRONT = ("Its web front stopped and no other one could take the call over, so nothing more will come: please "
            "call again.")


def forwarded(headers: Mapping[str, str]) -> dict[str, str]:
    """What of the client's ``headers`` the relay passes on (``FORWARDED``)."""
    return {name: value for name, value in headers.items() if name.lower() in FORWARDED}


class StreamRelay:
    """Relays API clients' event streams from the web fronts behind the worker queue (``http``)."""

    def __init__(self, http: httpx.AsyncClient, counted: Callable[[str], None] = lambda outcome: None) -> None:
        """``counted(outcome)``: one call whose web front died, ``adopted`` or ``lost`` (``JobsMetrics``)."""
        self.http, self.counted = http, counted

    async def open(self, session_hash: str, headers: dict[str, str]) -> httpx.Response:
        """The session's event stream at the web front the client's ``headers`` lead to (status not checked)."""
        request = self.http.build_request("GET", QUEUE_DATA_PATH, params={"session_hash": session_hash},
                                          headers=headers)
        return await self.http.send(request, stream=True)

    async def relay(self, first: httpx.Response, session_hash: str, headers: dict[str, str]) -> AsyncIterator[bytes]:
        """The client's stream: ``first`` (an open 200 stream) passed on, then, while calls wait whose web front
        died, the stream of the web front that adopted them."""
        calls, upstream = Calls(), first
        for attempt in range(MAX_ADOPTIONS + 1):
            if upstream is not None:
                async with aclosing(self._passed(upstream, calls)) as frames:
                    async for frame in frames:
                        yield frame
                if calls.closed:
                    return
            if not calls.waiting or attempt == MAX_ADOPTIONS:
                break
            logger.info("session %s: its web front's stream ended with %d call(s) in flight; adopting them",
                        session_hash, len(calls.waiting))
            for event_id in sorted(calls.waiting):
                if (refused := await self._adopt(session_hash, event_id, headers, calls)) is not None:
                    yield refused
            upstream = await self._reopen(session_hash, headers) if calls.waiting else None
        for event_id in sorted(calls.waiting):
            logger.warning("session %s: call %s given up (no web front took it over)", session_hash, event_id)
            self.counted("lost")
            yield encoded(lost(event_id, NO_FRONT))

    async def _passed(self, upstream: httpx.Response, calls: Calls) -> AsyncIterator[bytes]:
        """``upstream``'s frames as the client must see them, until it ends (closed: ``calls.closed``)."""
        cutter = Frames()
        try:
            async for chunk in upstream.aiter_raw():
                for frame in cutter.feed(chunk):
                    message = parsed(frame)
                    if message is None:
                        yield frame + b"\n\n"
                        continue
                    shown = calls.seen(message)
                    yield frame + b"\n\n" if shown is message else encoded(shown)
                    if message.get("msg") == CLOSE:
                        calls.closed = True
                        return
        except (httpx.HTTPError, FrameTooLarge) as exc:
            logger.info("a web front's stream broke off: %s", exc or type(exc).__name__)
        finally:
            await upstream.aclose()

    async def _adopt(self, session_hash: str, event_id: str, headers: dict[str, str], calls: Calls) -> bytes | None:
        """Ask a live web front to adopt call ``event_id``; None when one did, else the call's end for the client."""
        try:
            answer = await self.http.post(ADOPT_PATH, params={"session_hash": session_hash, "event_id": event_id},
                                          headers=headers)
            if answer.status_code == 200:
                calls.adopted(event_id, answer.json()["event_id"])
                logger.info("session %s: call %s adopted", session_hash, event_id)
                self.counted("adopted")
                return None
            logger.warning("session %s: call %s not adopted: %d %s", session_hash, event_id, answer.status_code,
                           answer.text[:200])
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            logger.warning("session %s: call %s not adopted: %s", session_hash, event_id, exc)
        calls.ended(event_id)
        self.counted("lost")
        return encoded(lost(event_id, NO_FRONT))

    async def _reopen(self, session_hash: str, headers: dict[str, str]) -> httpx.Response | None:
        """The session's stream at the adopting web front; None when it does not open."""
        try:
            upstream = await self.open(session_hash, headers)
        except httpx.HTTPError as exc:
            logger.warning("session %s: the adopting web front's stream did not open: %s", session_hash, exc)
            return None
        if upstream.status_code == 200:
            return upstream
        logger.warning("session %s: the adopting web front's stream answered %d", session_hash, upstream.status_code)
        await upstream.aclose()
        return None
