"""A session's Gradio jobs on this web front: a data stream with none, and no join of its own, gets an error at once.

Gradio keeps a session's message queue after its jobs ended (an LRU of sessions), and its ``queue/data``
stream for such a session sends heartbeats, and nothing else, for as long as the client stays: a client
whose job was joined on another web front (the balancer switched servers between the join and the stream,
e.g. a web front parked or unparked in between, or one restarted) would wait forever. For a session unknown
to it Gradio answers one ``unexpected_error`` message (``session_not_found``) and ends the stream;
``answer_orphan`` does the same for a known session with no job in flight here, so every client ends the
call with an error (the page shows it; ``gradio_client`` raises) instead of waiting.

A stream with no job here may still be one this front's own join asked for: a client opens a stream after a
join's answer unless its stream is open then, and the session's stream (open when the join came, or opened for
another join) delivers every event of the session and closes once none is left, so it may have delivered the
joined event and closed before the client read that answer (a fast event, a busy browser). The page then holds
the new stream for its next events: ended at once, they never got one. ``AwaitedStreams`` counts the joins
answered here that no stream followed yet; each stream takes one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from gradio.server_messages import UnexpectedErrorMessage
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from webui.web.bounded import BoundedMap

logger = logging.getLogger(__name__)

ORPHAN_MESSAGE = ("This web front has no job of this session (it was sent to another one, or this one was "
                  "restarted): please run it again.")
MAX_SESSIONS = 10_000
"""Sessions ``AwaitedStreams`` holds at most (the oldest joins are forgotten first)."""
MAX_SESSION_BYTES = 4 * 1024 * 1024
"""Bytes of session hashes and join times ``AwaitedStreams`` holds, about."""
MAX_JOINS = 32
"""Joins awaiting a stream kept per session (a client with more never listens: the oldest go)."""


def has_job(queue: Any, session_hash: str) -> bool:
    """Whether Gradio's ``queue`` holds an event of ``session_hash`` whose end its client was not yet sent."""
    return bool(queue.pending_event_ids_session.get(session_hash))


class AwaitedStreams:
    """Per session, the times of the joins answered here in the last ``grace`` seconds that no data stream followed.

    A client opens at most one stream per join, and within the listen grace of its answer (``presence``): so a
    stream that finds one is a client's own, and one that finds none has nothing to wait for here.
    """

    def __init__(self, grace: float, max_sessions: int = MAX_SESSIONS, max_bytes: int = MAX_SESSION_BYTES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.grace = grace
        self._clock = clock
        self._joins: BoundedMap[tuple[float, ...]] = BoundedMap(max_sessions, max_bytes, grace, clock=clock)

    def answered(self, session_hash: str) -> None:
        """A join of ``session_hash`` is being answered (before its answer leaves: its stream comes after)."""
        self._joins[session_hash] = (*self._recent(session_hash), self._clock())[-MAX_JOINS:]

    def followed(self, session_hash: str) -> bool:
        """A data stream of ``session_hash`` came: whether a join answered here awaited it (it takes the oldest)."""
        joins = self._recent(session_hash)
        if len(joins) > 1:
            self._joins[session_hash] = joins[1:]
        else:
            self._joins.pop(session_hash, None)
        return bool(joins)

    def __len__(self) -> int:
        """Sessions held."""
        return len(self._joins)

    @property
    def nbytes(self) -> int:
        """Bytes the sessions held take (as ``sys.getsizeof`` counts keys and join times)."""
        return self._joins.nbytes

    def _recent(self, session_hash: str) -> tuple[float, ...]:
        oldest = self._clock() - self.grace
        return tuple(answered for answered in self._joins.get(session_hash, ()) if answered >= oldest)


async def answer_orphan(scope: Scope, receive: Receive, send: Send) -> None:
    """Answer a data stream that has no job here: one ``unexpected_error`` event (as Gradio words an unknown
    session), then the end of the stream (the session hash, a client's secret, is not logged)."""
    logger.info("an event stream for a session with no job on this web front: ended with an error")
    event = UnexpectedErrorMessage(message=ORPHAN_MESSAGE, session_not_found=True).model_dump_json()
    response = Response(f"data: {event}\n\n", media_type="text/event-stream",
                        headers={"Cache-Control": "no-cache"})
    await response(scope, receive, send)
