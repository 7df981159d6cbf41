"""The jobs service's listeners: ``--host`` (plain HTTP, for this balancer's HAProxy and sidecar on loopback) and,
with ``--peer-host``, a second one serving mutual TLS to the other balancers' HAProxy (``jobs.backups``).

Both are uvicorn servers of the same app in one event loop. The first runs the app's lifespan (store, dispatcher,
janitor) and owns the signals; the peer listener runs no lifespan of its own and closes when the first stops.
"""

from __future__ import annotations

import asyncio
import logging

import uvicorn
from starlette.types import ASGIApp

from jobs.settings import JobsSettings
from webui.embedded_server import EmbeddedServer

logger = logging.getLogger(__name__)

_QUIET = {"log_config": None, "access_log": False}


async def _serve_both(main: uvicorn.Server, peer: uvicorn.Server) -> None:
    peer_task = asyncio.create_task(peer.serve())
    try:
        await main.serve()
    finally:
        peer.should_exit = True
        await peer_task


def serve(app: ASGIApp, settings: JobsSettings) -> None:
    """Serve ``app`` on its listeners until a signal stops it."""
    main = uvicorn.Config(app, host=settings.host, port=settings.port, **_QUIET)
    if settings.peer_host is None:
        uvicorn.Server(main).run()
        return
    port = settings.peer_port or settings.port
    peer = uvicorn.Config(app, host=settings.peer_host, port=port, lifespan="off", **_QUIET, **settings.uvicorn_tls())
    logger.info("jobs service also on https://%s:%d for the other balancers (client certificates required)",
                settings.peer_host, port)
    asyncio.run(_serve_both(uvicorn.Server(main), EmbeddedServer(peer)))  # the main server takes the signals
