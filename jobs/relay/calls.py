"""The calls one client's stream carries: which it still waits for, and under which id each web front knows them."""

from __future__ import annotations

from collections.abc import Iterable

from jobs.relay.messages import COMPLETED, Message


class Calls:
    """A client knows each call by the event id its first web front gave it; an adopting web front gives the call
    an id of its own (``adopted``), which the relay turns back into the client's (``seen``)."""

    def __init__(self, joined: Iterable[str] = ()) -> None:
        """``joined``: calls the client joined through this relay that it was not yet told the end of."""
        self.waiting: set[str] = set(joined)
        """Calls the client was told of (or joined) and not yet told the end of, by the client's ids."""
        self.done: set[str] = set()
        """Calls the client was told the end of, by the client's ids."""
        self.closed = False
        """Whether a web front closed the stream (no call of the session left there): the client's ends too."""
        self._known_as: dict[str, str] = {}
        """The id the current web front gives a call -> the client's id for it."""

    def seen(self, message: Message) -> Message:
        """``message`` from the current web front as the client must see it: under the client's id for its call."""
        upstream = message.get("event_id")
        if not isinstance(upstream, str):
            return message
        own = self._known_as.get(upstream, upstream)
        if message.get("msg") == COMPLETED:
            self._known_as.pop(upstream, None)
            self._end(own)
        else:
            self.waiting.add(own)
        return message if own == upstream else {**message, "event_id": own}

    def adopted(self, own: str, upstream: str) -> None:
        """The client's call ``own`` goes on as ``upstream`` at another web front."""
        self._forget(own)
        self._known_as[upstream] = own

    def ended(self, own: str) -> None:
        """The client's call ``own`` was told its end by the relay itself."""
        self._forget(own)
        self._end(own)

    def _forget(self, own: str) -> None:
        for old in [old for old, call in self._known_as.items() if call == own]:
            del self._known_as[old]

    def _end(self, own: str) -> None:
        self.waiting.discard(own)
        self.done.add(own)
