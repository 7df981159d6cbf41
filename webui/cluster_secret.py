"""Only parts of the cluster reach a node's ports: the cluster secret, checked by workers and web fronts.

The sidecar hands every part the cluster secret in its environment (``CLUSTER_SECRET_ENV``); HAProxy
adds it to the requests it sends to workers and web fronts (``CLUSTER_SECRET_HEADER``), and web fronts
send it to the worker queue. A part given the secret answers a request without it with a JSON 403, except
for its probes and counters (``OPEN_PATHS``): a local user cannot go around the site's login and limits.
The secret is kept as a SHA-256 digest and compared in constant time; it is never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
from collections.abc import Mapping

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from webui.contract import CLUSTER_SECRET_ENV, CLUSTER_SECRET_HEADER, NOT_A_PART, OPEN_PATHS

logger = logging.getLogger(__name__)

REFUSED = {"error": NOT_A_PART[0], "detail": NOT_A_PART[1], "fields": []}


def secret_headers(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The header that tells a worker or the worker queue a request comes from the cluster (none without one)."""
    secret = environ.get(CLUSTER_SECRET_ENV)
    return {CLUSTER_SECRET_HEADER: secret} if secret else {}


class ClusterSecret:
    """The secret's digest; ``matches`` compares a header value with it in constant time."""

    def __init__(self, secret: str) -> None:
        self._digest = hashlib.sha256(secret.encode()).digest()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> ClusterSecret | None:
        """The secret this process was given, or None (then nothing is checked)."""
        secret = environ.get(CLUSTER_SECRET_ENV)
        return cls(secret) if secret else None

    def matches(self, value: str | None) -> bool:
        """Whether ``value`` is the secret."""
        given = hashlib.sha256((value or "").encode("latin-1", "replace")).digest()
        return value is not None and hmac.compare_digest(given, self._digest)


class RequireClusterSecret:
    """ASGI middleware: a request without the cluster secret gets a JSON 403 (``OPEN_PATHS`` excepted)."""

    def __init__(self, app: ASGIApp, secret: ClusterSecret) -> None:
        self.app = app
        self.secret = secret

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in OPEN_PATHS:
            if not self.secret.matches(Headers(scope=scope).get(CLUSTER_SECRET_HEADER)):
                client = scope.get("client") or ("?", 0)
                logger.warning("refused %s %s from %s: no cluster secret", scope["method"], scope["path"], client[0])
                await JSONResponse(REFUSED, status_code=403)(scope, receive, send)
                return
        await self.app(scope, receive, send)
