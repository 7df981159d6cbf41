"""Actions only from the sidecar's own pages or from clients that are no browser: ASGI middleware answering 403 to
a POST (any method that changes something) that a browser sent from another site.

A browser that has the stats page's user and password for the sidecar (the operations page asked for them) sends
them along with any request to it, also one a page on another site makes it send: a form that posts to
``/drain/node1``. Such a request carries an ``Origin`` other than the sidecar's own, or ``Sec-Fetch-Site:
cross-site`` / ``same-site``; ``python -m balancer.cli``, curl and Prometheus send neither header and pass.
"""

from __future__ import annotations

import logging

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from webui.same_site import cross_site

logger = logging.getLogger(__name__)

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class SameOrigin:
    """ASGI middleware: an HTTP request that changes something, sent from another site, gets a JSON 403."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] not in SAFE_METHODS and cross_site(scope):
            logger.warning("refused %s %s from another site", scope["method"], scope["path"][:100])
            response = JSONResponse({"error": "cross_site", "fields": [], "detail": "The sidecar takes actions only "
                                     "from its own operations page or from clients such as python -m balancer.cli."},
                                    status_code=403)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
