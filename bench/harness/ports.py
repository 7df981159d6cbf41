"""Listening ports for the processes a test or benchmark starts: reserved once, never guessed twice.

Binding port 0 and closing the socket names a port that is free *now*, but the kernel may name it
again on the next call (two parts of one cluster then get the same port), and it comes from the
ephemeral range, where any outgoing connection of this machine may take it before the server that
was meant to listen on it starts. ``PortAllocator`` instead hands out ports from outside the
kernel's ephemeral range (``/proc/sys/net/ipv4/ip_local_port_range``), each at most once in this
process, and only ports nothing is bound to when asked.
"""

from __future__ import annotations

import logging
import random
import socket
import threading
from pathlib import Path

logger = logging.getLogger(__name__)

EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LINUX_EPHEMERAL_DEFAULT = (32768, 60999)
LOWEST = 10000
"""Below this, ports that development tools and services commonly use."""
HIGHEST = 65535


def ephemeral_range(path: Path = EPHEMERAL_RANGE_FILE) -> tuple[int, int]:
    """The kernel's ephemeral port range (first, last); Linux's default where it cannot be read."""
    try:
        first, last = (int(field) for field in path.read_text().split())
    except (OSError, ValueError):
        return LINUX_EPHEMERAL_DEFAULT
    return first, last


def listener_ranges(ephemeral: tuple[int, int]) -> list[range]:
    """The ports from ``LOWEST`` to ``HIGHEST`` outside ``ephemeral``, as ranges."""
    first, last = ephemeral
    ranges = [range(LOWEST, min(first, HIGHEST + 1)), range(max(last + 1, LOWEST), HIGHEST + 1)]
    return [r for r in ranges if len(r) > 0]


def bindable(port: int) -> bool:
    """Whether nothing is bound to ``port`` on any IPv4 address now (no listener, no connection's end)."""
    with socket.socket() as sock:
        try:
            sock.bind(("", port))  # the wildcard address conflicts with a socket on any address
        except OSError:
            return False
    return True


class PortAllocator:
    """Hands out each port of ``ranges`` at most once, skipping ports in use; safe across threads."""

    def __init__(self, ranges: list[range], seed: int | None = None) -> None:
        self.ranges = ranges
        self.size = sum(len(r) for r in ranges)
        if self.size == 0:
            raise ValueError("no ports to hand out: the ranges are empty")
        self._given: set[int] = set()
        self._lock = threading.Lock()
        self._random = random.Random(seed)

    def reserve(self) -> int:
        """A port not handed out before and free now; ``RuntimeError`` when none is left."""
        with self._lock:
            start = self._random.randrange(self.size)  # a random start: two processes seldom meet
            for offset in range(self.size):
                port = self._nth((start + offset) % self.size)
                if port not in self._given and bindable(port):
                    self._given.add(port)
                    return port
        raise RuntimeError(f"no free port left: all {self.size} ports of {self.ranges} are handed out or in use")

    def _nth(self, index: int) -> int:
        for ports in self.ranges:
            if index < len(ports):
                return ports[index]
            index -= len(ports)
        raise IndexError(index)


ALLOCATOR = PortAllocator(listener_ranges(ephemeral_range()))
"""This process's allocator: every ``free_port`` comes from it."""
