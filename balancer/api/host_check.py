"""Only the sidecar's own names in the Host header: ASGI middleware answering 421 to any other.

A page on another site can make a browser on this machine send requests to ``127.0.0.1:8405`` under a
name of its own that resolves there (DNS rebinding), and then read the answers as its own: ``/status``
shows every node, PID and GPU. Refusing a Host header that does not name the sidecar (loopback, the
address it listens on, this machine's addresses when it listens on every interface) closes that door.
"""

from __future__ import annotations

import logging

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from balancer.config.basics import LOOPBACK, WILDCARD_HOSTS
from balancer.config.host import local_addresses

logger = logging.getLogger(__name__)

LOOPBACK_NAMES = frozenset({"localhost", LOOPBACK, "[::1]"})
"""Names every sidecar answers to."""


def listener_hosts(host: str, port: int) -> frozenset[str]:
    """Host header values (lower case, with and without ``port``) naming a listener bound to ``host``."""
    names = set(LOOPBACK_NAMES)
    names |= local_addresses() if host in WILDCARD_HOSTS else {f"[{host}]" if ":" in host else host}
    return frozenset(value for name in names for value in (name.lower(), f"{name.lower()}:{port}"))


class AllowedHosts:
    """ASGI middleware: HTTP requests whose Host header is not in ``allowed`` get a JSON 421."""

    def __init__(self, app: ASGIApp, allowed: frozenset[str]) -> None:
        self.app = app
        self.allowed = allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            host = Headers(scope=scope).get("host", "").lower()
            if host not in self.allowed:
                logger.warning("refused a request for host %r (not a name of this sidecar)", host[:100])
                response = JSONResponse({"error": "unknown_host", "fields": [],
                                         "detail": "This server does not serve that host name; use its address."},
                                        status_code=421)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
