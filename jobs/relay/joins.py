"""The calls clients joined through this relay that it has not yet seen end, per session, with what each join sent:
what a client's stream must still deliver when it breaks, or when the web front that took the join died before the
stream opened, and how to join such a call again elsewhere when no job of it can be adopted (a page's events)."""

from __future__ import annotations

from typing import Any

from webui.web.bounded import BoundedMap

MAX_SESSIONS = 10_000
"""Sessions held at most (the ones written longest ago go first)."""
MAX_BYTES = 16 * 1024 * 1024
"""Bytes of session hashes, event ids and joins held, about."""
MAX_CALLS = 32
"""Calls kept per session (a client with more in flight at once loses failover for its oldest)."""
MAX_JOIN_KEPT = 64 * 1024
"""The largest join kept to be sent again (a page's form; a larger one's call can only be adopted by its job)."""
KEPT_S = 3600.0
"""Seconds a session's calls are kept after its last join (a call may wait long for a worker)."""

Call = tuple[str, bytes]
"""A call's event id and its join's body (empty: too large to keep)."""


def calls_size(session_hash: str, calls: Any) -> int:
    return len(session_hash) + sum(len(event_id) + len(body) + 64 for event_id, body in calls)


class Joins:
    """Per session, the calls joined through this relay that no stream has yet seen end."""

    def __init__(self) -> None:
        self._calls: BoundedMap[tuple[Call, ...]] = BoundedMap(MAX_SESSIONS, MAX_BYTES, KEPT_S, sizeof=calls_size)
        self._taken: BoundedMap[bool] = BoundedMap(MAX_SESSIONS, MAX_BYTES // 16, KEPT_S)

    def joined(self, session_hash: str, event_id: str, body: bytes) -> None:
        kept = body if len(body) <= MAX_JOIN_KEPT else b""
        self._calls[session_hash] = (*self._calls.get(session_hash, ()), (event_id, kept))[-MAX_CALLS:]

    def ended(self, session_hash: str, event_id: str) -> None:
        left = tuple(call for call in self._calls.get(session_hash, ()) if call[0] != event_id)
        if left:
            self._calls[session_hash] = left
        else:
            self._calls.pop(session_hash, None)

    def of(self, session_hash: str) -> tuple[str, ...]:
        """The session's calls not yet seen to end, by event id."""
        return tuple(event_id for event_id, _ in self._calls.get(session_hash, ()))

    def taken_over(self, session_hash: str, event_id: str) -> None:
        """Call ``event_id`` went on at another web front (its cancel must reach its job: ``was_taken_over``)."""
        self._taken[f"{session_hash} {event_id}"] = True

    def was_taken_over(self, session_hash: str, event_id: str) -> bool:
        return f"{session_hash} {event_id}" in self._taken

    def body(self, session_hash: str, event_id: str) -> bytes | None:
        """What call ``event_id``'s join sent (None: not kept, or not joined here)."""
        return next((body for call, body in self._calls.get(session_hash, ()) if call == event_id and body), None)
