"""Clients' Gradio joins and event streams, passed between them and their web fronts; calls in flight when a web
front dies go on at another (``webui.web.studio.adoption``), whose stream the relay reads next."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import aclosing

import anyio
import httpx

from jobs.relay.calls import Calls
from jobs.relay.joins import Joins
from jobs.relay.messages import CLOSE, Frames, FrameTooLarge, encoded, lost, parsed
from webui.contract import (
    ADOPT_PATH,
    ADOPTED_EVENT_HEADER,
    EVENT_JOB_KEY_PREFIX,
    QUEUE_CANCEL_PATH,
    QUEUE_DATA_PATH,
    QUEUE_JOIN_PATH,
    RETRYABLE_STATUSES,
)
from webui.trace import REQUEST_ID_HEADER

logger = logging.getLogger(__name__)

FORWARDED = frozenset({"cookie", "authorization", "host", "x-forwarded-for", "x-forwarded-proto", "user-agent",
                       "accept", "content-type", REQUEST_ID_HEADER.lower()})
"""The client's headers a web front sees through the relay: its cookie (the same web front as its other requests),
its login, where it asked (the result's URLs), what it sends, and the request's id."""
MAX_ADOPTIONS = 3
"""Web fronts that may die under one client's stream before the relay gives its calls up."""
ADOPT_DELAYS_S = (0.25, 0.5, 1.0, 2.0, 2.0, 4.0)
"""Waits between tries of an adoption that nothing answered, or that was answered 502/503/504: while the dead web
front is still in rotation (HAProxy ends a request to a server it marks down, and does not try it elsewhere), or
while no web front is up."""
JOIN_DELAYS_S = (0.25, 0.5, 1.0, 2.0)
"""The same for a join, whose client waits for its answer (a join that died with its web front made no call)."""
NO_FRONT = ("Its web front stopped and no other one could take the call over, so nothing more will come: please "
            "call again.")


def forwarded(headers: Mapping[str, str]) -> dict[str, str]:
    """What of the client's ``headers`` the relay passes on (``FORWARDED``)."""
    return {name: value for name, value in headers.items() if name.lower() in FORWARDED}


class StreamRelay:
    """Relays clients' Gradio joins and event streams from the web fronts behind the worker queue (``http``)."""

    def __init__(self, http: httpx.AsyncClient, counted: Callable[[str], None] = lambda outcome: None,
                 cancel_jobs: Callable[[str], Awaitable[object]] | None = None) -> None:
        """``counted(outcome)``: one call whose web front died, ``adopted`` or ``lost`` (``JobsMetrics``);
        ``cancel_jobs(key)``: cancel the jobs submitted with that ``Idempotency-Key`` (the job store's)."""
        self.http, self.counted, self.cancel_jobs = http, counted, cancel_jobs
        self.joins = Joins()

    async def cancel(self, session_hash: str | None, event_id: str | None, body: bytes,
                     headers: dict[str, str]) -> httpx.Response:
        """gradio_client's cancel of a call, passed to its web front (its answer, read). A call another web front
        took over runs there as another event, which that cancel does not name: its job is canceled here."""
        if (session_hash and event_id and self.cancel_jobs is not None
                and self.joins.was_taken_over(session_hash, event_id)):
            logger.info("session %s: canceling the job of call %s, taken over elsewhere", session_hash, event_id)
            try:
                await self.cancel_jobs(f"{EVENT_JOB_KEY_PREFIX}{event_id}")
            except Exception as exc:  # the store's errors: the cancel still goes on to the web front
                logger.warning("session %s: call %s's job not canceled: %s", session_hash, event_id, exc)
        return await self.http.post(QUEUE_CANCEL_PATH, content=body, headers=headers)

    async def join(self, session_hash: str | None, body: bytes, headers: dict[str, str]) -> httpx.Response:
        """Join a call at the client's web front (its answer, read); the relay remembers the call it made."""
        answer = await self._tried(lambda: self.http.post(QUEUE_JOIN_PATH, content=body, headers=headers),
                                   JOIN_DELAYS_S, "a join")
        if answer.status_code == 200 and session_hash is not None:
            try:
                self.joins.joined(session_hash, str(answer.json()["event_id"]), body)
            except (ValueError, KeyError, TypeError):
                logger.warning("session %s: a join answered without an event id", session_hash)
        return answer

    async def open(self, session_hash: str, headers: dict[str, str]) -> httpx.Response:
        """The session's event stream at the web front the client's ``headers`` lead to (status not checked)."""
        request = self.http.build_request("GET", QUEUE_DATA_PATH, params={"session_hash": session_hash},
                                          headers=headers)
        return await self.http.send(request, stream=True)

    def waits(self, session_hash: str) -> bool:
        """Whether calls the session joined here have not yet been seen to end."""
        return bool(self.joins.of(session_hash))

    async def relay(self, first: httpx.Response | None, session_hash: str,
                    headers: dict[str, str]) -> AsyncIterator[bytes]:
        """The client's stream: ``first`` (an open 200 stream; None: its web front is gone) passed on, then, while
        calls wait whose web front died, the stream of the web front that adopted them."""
        calls, upstream = Calls(self.joins.of(session_hash)), first
        try:
            for attempt in range(MAX_ADOPTIONS + 1):
                if upstream is not None:
                    async with aclosing(self._passed(upstream, calls)) as frames:
                        async for frame in frames:
                            yield frame
                    if calls.closed:
                        return
                calls.waiting |= set(self.joins.of(session_hash)) - calls.done  # joined since, maybe not yet seen
                if not calls.waiting or attempt == MAX_ADOPTIONS:
                    break
                logger.info("session %s: its web front's stream is gone with %d call(s) in flight; adopting them",
                            session_hash, len(calls.waiting))
                for event_id in sorted(calls.waiting):
                    if (refused := await self._adopt(session_hash, event_id, headers, calls)) is not None:
                        yield refused
                upstream = await self._reopen(session_hash, headers) if calls.waiting else None
            for event_id in sorted(calls.waiting):
                logger.warning("session %s: call %s given up (no web front took it over)", session_hash, event_id)
                calls.ended(event_id)
                self.counted("lost")
                yield encoded(lost(event_id, NO_FRONT))
        finally:
            for event_id in calls.done:
                self.joins.ended(session_hash, event_id)

    async def _passed(self, upstream: httpx.Response, calls: Calls) -> AsyncIterator[bytes]:
        """``upstream``'s frames as the client must see them, until it ends (closed: ``calls.closed``)."""
        cutter = Frames()
        try:
            async for chunk in upstream.aiter_raw():
                for frame in cutter.feed(chunk):
                    message = parsed(frame)
                    shown = message if message is None else calls.seen(message)
                    yield frame + b"\n\n" if shown is message else encoded(shown)
                    if message is not None and message.get("msg") == CLOSE:
                        calls.closed = True
                        return
        except (httpx.HTTPError, FrameTooLarge) as exc:
            logger.info("a web front's stream broke off: %s", exc or type(exc).__name__)
        finally:
            await upstream.aclose()

    async def _adopt(self, session_hash: str, event_id: str, headers: dict[str, str], calls: Calls) -> bytes | None:
        """Have a live web front take call ``event_id`` over: adopt its job (an API call's), else join the call again
        whole (a page's: its join kept here); None when one did, else the call's end for the client."""
        params = {"session_hash": session_hash, "event_id": event_id}
        again = {**headers, ADOPTED_EVENT_HEADER: event_id, "content-type": "application/json"}  # a join's body
        try:
            answer = await self._tried(lambda: self.http.post(ADOPT_PATH, params=params, headers=headers),
                                       ADOPT_DELAYS_S, f"call {event_id}'s adoption")
            if answer.status_code == 404 and (body := self.joins.body(session_hash, event_id)) is not None:
                answer = await self._tried(lambda: self.http.post(QUEUE_JOIN_PATH, content=body, headers=again),
                                           JOIN_DELAYS_S, f"call {event_id}'s join again")
            if answer.status_code == 200:
                calls.adopted(event_id, answer.json()["event_id"])
                self.joins.taken_over(session_hash, event_id)
                logger.info("session %s: call %s taken over", session_hash, event_id)
                self.counted("adopted")
                return None
            problem = f"{answer.status_code} {answer.text[:200]}"
        except (ValueError, KeyError) as exc:
            problem = f"an answer without an event id: {exc}"
        except httpx.TransportError as exc:
            problem = str(exc) or type(exc).__name__
        logger.warning("session %s: call %s not taken over: %s", session_hash, event_id, problem)
        calls.ended(event_id)
        self.counted("lost")
        return encoded(lost(event_id, NO_FRONT))

    @staticmethod
    async def _tried(send: Callable[[], Awaitable[httpx.Response]], delays: tuple[float, ...],
                     what: str) -> httpx.Response:
        """``send()``, tried again after each of ``delays`` while nothing ran (no answer, or 502/503/504): the
        last answer (the last ``httpx.TransportError`` when none came)."""
        for delay in (*delays, None):
            try:
                answer = await send()
                if answer.status_code not in RETRYABLE_STATUSES or delay is None:
                    return answer
                problem = f"{answer.status_code}"
            except httpx.TransportError as exc:
                if delay is None:
                    raise
                problem = str(exc) or type(exc).__name__
            logger.info("%s: no web front took it (%s); trying again in %g s", what, problem, delay)
            await anyio.sleep(delay)
        raise AssertionError("unreachable: the last try returns or raises")

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
