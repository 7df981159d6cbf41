"""A session's Gradio jobs on this web front: a data stream with none gets an error at once; sticky jobs are counted.

Gradio keeps a session's message queue after its jobs ended (an LRU of sessions), and its ``queue/data``
stream for such a session sends heartbeats, and nothing else, for as long as the client stays: a client
whose job was joined on another web front (the balancer switched servers between the join and the stream,
e.g. a web front parked or unparked in between, or one restarted) would wait forever. For a session unknown
to it Gradio answers one ``unexpected_error`` message (``session_not_found``) and ends the stream;
``answer_orphan`` does the same for a known session with no job in flight here, so every client ends the
call with an error (the page shows it; ``gradio_client`` raises) instead of waiting. A data stream is only
opened after a join, and Gradio registers a joined event before the join's answer leaves, so a stream of
this front's own job always finds it.

``SessionJobs`` remembers the sticky node (HAProxy's header) of each session's last join, so that the jobs
joined and not yet delivered count as that node's requests in flight (``webui.traffic``): a rolling restart
unparks a web front only when none of its sticky clients' jobs is under way on a stand-in, including the
moment between a join and its data stream.
"""

from __future__ import annotations

import logging
from collections import Counter
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


class SessionJobs:
    """Session -> the sticky node of its last join; Gradio's pending events counted per sticky node."""

    def __init__(self, queue: Any) -> None:
        """``queue``: a callable giving Gradio's queue (it exists once the app is mounted)."""
        self.queue = queue
        self.sticky: dict[str, str] = {}

    def joined(self, session_hash: Any, node: str | None) -> None:
        """A join of ``session_hash`` by a client stuck to ``node`` (None: not stuck) reached this web front."""
        if not isinstance(session_hash, str):
            return
        if node is None:
            self.sticky.pop(session_hash, None)
            return
        if len(self.sticky) >= MAX_SESSIONS:
            self.prune()
        if len(self.sticky) < MAX_SESSIONS:
            self.sticky[session_hash] = node

    def prune(self) -> None:
        """Forget the sessions with no job pending here."""
        pending = self.queue().pending_event_ids_session
        self.sticky = {session: node for session, node in self.sticky.items() if pending.get(session)}

    def by_sticky(self) -> Counter[str]:
        """Sticky node -> jobs of its clients joined here and not yet delivered."""
        pending = self.queue().pending_event_ids_session
        counts: Counter[str] = Counter()
        for session, node in self.sticky.items():
            counts[node] += len(pending.get(session, ()))
        return +counts
