"""``BoundedMap``: a dict for per-client entries that an outsider can add to, bounded three ways.

Any structure keyed by something a client chooses (a session hash, an upload id) grows with
every new key a client sends. ``BoundedMap`` keeps at most ``max_items`` entries and about
``max_bytes`` bytes of them (key and value, as ``sys.getsizeof`` counts them), and forgets an
entry ``ttl`` seconds after it was last written. When a bound is passed the oldest-written
entries go first, so a flood of new keys pushes out old ones instead of growing the process.
"""

from __future__ import annotations

import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any, TypeVar

V = TypeVar("V")


def shallow_size(key: str, value: Any) -> int:
    """Bytes an entry holds, as ``sys.getsizeof`` counts its key and value."""
    return sys.getsizeof(key) + sys.getsizeof(value)


class BoundedMap(MutableMapping[str, V]):
    """A mapping with at most ``max_items`` entries, about ``max_bytes`` bytes, each kept ``ttl`` s."""

    def __init__(self, max_items: int, max_bytes: int, ttl: float,
                 sizeof: Callable[[str, Any], int] = shallow_size,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if max_items < 1 or max_bytes < 1 or ttl <= 0:
            raise ValueError("BoundedMap bounds must be positive")
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.ttl = ttl
        self._sizeof = sizeof
        self._clock = clock
        self._entries: OrderedDict[str, tuple[V, int, float]] = OrderedDict()
        self.nbytes = 0
        """Bytes the entries now hold (as ``sizeof`` counts them)."""
        self.evicted = 0
        """Entries pushed out by a bound or expired, since the map was made."""

    def __getitem__(self, key: str) -> V:
        self.expire()
        return self._entries[key][0]

    def __setitem__(self, key: str, value: V) -> None:
        self._discard(key)
        size = self._sizeof(key, value)
        self._entries[key] = (value, size, self._clock())
        self.nbytes += size
        self.expire()
        while len(self._entries) > self.max_items or (self.nbytes > self.max_bytes and len(self._entries) > 1):
            self._evict_oldest()
        if self.nbytes > self.max_bytes:  # one entry alone is larger than the whole map may be
            self._evict_oldest()

    def __delitem__(self, key: str) -> None:
        if not self._discard(key):
            raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        self.expire()
        return iter(list(self._entries))

    def __len__(self) -> int:
        self.expire()
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        self.expire()
        return key in self._entries

    def expire(self) -> None:
        """Forget the entries last written more than ``ttl`` seconds ago."""
        oldest_kept = self._clock() - self.ttl
        while self._entries and next(iter(self._entries.values()))[2] < oldest_kept:
            self._evict_oldest()

    def _evict_oldest(self) -> None:
        _, (_, size, _) = self._entries.popitem(last=False)
        self.nbytes -= size
        self.evicted += 1

    def _discard(self, key: str) -> bool:
        entry = self._entries.pop(key, None)
        if entry is None:
            return False
        self.nbytes -= entry[1]
        return True
