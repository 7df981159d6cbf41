"""The calls API clients joined through this relay that it has not yet seen end, per session: what a client's
stream must still deliver when it breaks, or when the web front that took the join died before the stream opened."""

from __future__ import annotations

from webui.web.bounded import BoundedMap

MAX_SESSIONS = 10_000
"""Sessions held at most (the ones written longest ago go first)."""
MAX_BYTES = 4 * 1024 * 1024
"""Bytes of session hashes and event ids held, about."""
MAX_CALLS = 32
"""Calls kept per session (a client with more in flight at once loses failover for its oldest)."""
KEPT_S = 3600.0
"""Seconds a session's calls are kept after its last join (a call may wait long for a worker)."""


class Joins:
    """Per session, the ids of the calls joined through this relay that no stream has yet seen end."""

    def __init__(self) -> None:
        self._calls: BoundedMap[tuple[str, ...]] = BoundedMap(MAX_SESSIONS, MAX_BYTES, KEPT_S)

    def joined(self, session_hash: str, event_id: str) -> None:
        self._calls[session_hash] = (*self.of(session_hash), event_id)[-MAX_CALLS:]

    def ended(self, session_hash: str, event_id: str) -> None:
        left = tuple(call for call in self.of(session_hash) if call != event_id)
        if left:
            self._calls[session_hash] = left
        else:
            self._calls.pop(session_hash, None)

    def of(self, session_hash: str) -> tuple[str, ...]:
        return self._calls.get(session_hash, ())
