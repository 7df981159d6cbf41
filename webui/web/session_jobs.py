"""A session's Gradio jobs on this web front: a data stream with none gets an error at once.

Gradio keeps a session's message queue after its jobs ended (an LRU of sessions), and its ``queue/data``
stream for such a session sends heartbeats, and nothing else, for as long as the client stays: a client
whose job was joined on another web front (the balancer switched servers between the join and the stream,
e.g. a web front parked or unparked in between, or one restarted) would wait forever. For a session unknown
to it Gradio answers one ``unexpected_error`` message (``session_not_found``) and ends the stream;
``answer_orphan`` does the same for a known session with no job in flight here, so every client ends the
call with an error (the page shows it; ``gradio_client`` raises) instead of waiting. A data stream is only
opened after a join, and Gradio registers a joined event before the join's answer leaves, so a stream of
this front's own job always finds it.
"""

from __future__ import annotations

import logging
from typing import Any

from gradio.server_messages import UnexpectedErrorMessage
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

logger = logging.getLogger(__name__)

ORPHAN_MESSAGE = ("This web front has no job of this session (it was sent to another one, or this one was "
                  "restarted): please run it again.")
MAX_SESSIONS = 10_000
"""Sessions remembered at most (those with no job pending are forgotten first)."""


def has_job(queue: Any, session_hash: str) -> bool:
    """Whether Gradio's ``queue`` holds an event of ``session_hash`` whose end its client was not yet sent."""
    return bool(queue.pending_event_ids_session.get(session_hash))


async def answer_orphan(scope: Scope, receive: Receive, send: Send) -> None:
    """Answer a data stream that has no job here: one ``unexpected_error`` event (as Gradio words an unknown
    session), then the end of the stream (the session hash, a client's secret, is not logged)."""
    logger.info("an event stream for a session with no job on this web front: ended with an error")
    event = UnexpectedErrorMessage(message=ORPHAN_MESSAGE, session_not_found=True).model_dump_json()
    response = Response(f"data: {event}\n\n", media_type="text/event-stream",
                        headers={"Cache-Control": "no-cache"})
    await response(scope, receive, send)

