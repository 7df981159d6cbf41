"""TCP keep-alive for long waits on one connection: a dead path ends in seconds instead of never.

A balancer that dies or is cut off mid-request cannot tell its clients, and a client that is only waiting sends
nothing, so nothing tells it either. With keep-alive the kernel probes an idle connection: once the floating
address has moved, the other balancer answers the probe with a reset (the wait ends at once); while nothing
answers, the connection ends after ``IDLE_S + PROBES * INTERVAL_S``.
"""

from __future__ import annotations

import socket
import ssl

import httpx

IDLE_S = 2
"""Seconds of silence before the first probe."""
INTERVAL_S = 1
"""Seconds between probes."""
PROBES = 3
"""Unanswered probes before the kernel ends the connection."""
DEAD_AFTER_S = IDLE_S + PROBES * INTERVAL_S
"""The longest a silent, dead connection lasts."""


def socket_options() -> list[tuple[int, int, int]]:
    """``setsockopt`` triples for an httpx transport (``socket_options=``); Linux names, others where missing."""
    options = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
    for name, value in (("TCP_KEEPIDLE", IDLE_S), ("TCP_KEEPINTVL", INTERVAL_S), ("TCP_KEEPCNT", PROBES)):
        if hasattr(socket, name):
            options.append((socket.IPPROTO_TCP, getattr(socket, name), value))
    return options


def async_transport(verify: ssl.SSLContext | bool = True) -> httpx.AsyncHTTPTransport:
    """An httpx transport whose connections have keep-alive on (``verify`` as httpx takes it)."""
    return httpx.AsyncHTTPTransport(verify=verify, socket_options=socket_options())
