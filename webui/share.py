"""A public Gradio share link to a local port: one web front, or the balancer so every node serves it.

Gradio's own ``share=True`` would tunnel to the Gradio app it launches; this opens the same kind
of tunnel (Gradio's FRP share servers, ``gradio.networking.setup_tunnel``) to any ``host:port``:
``webui.web --share`` links its own node, ``launch.py --share`` HAProxy's public frontend. The
link is public: pair it with basic auth (``--auth-users-file``).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from urllib.parse import urlparse, urlunparse

logger = logging.getLogger(__name__)

SHARE_PROTOCOL = "https"
SHARE_HOST_SUFFIX = ".gradio.live"
"""Host names Gradio's share servers give links (the public frontend must accept them)."""


class ShareTunnel:
    """One share link to ``host:port`` (a web front, or the balancer's public frontend)."""

    def __init__(self, host: str, port: int, setup: Callable[..., str] | None = None) -> None:
        from gradio import networking  # imported when needed: gradio is slow to import

        self.host = host
        self.port = port
        self._setup = setup or networking.setup_tunnel
        self.url: str | None = None

    def open(self) -> str:
        """Ask Gradio's share server for a tunnel; the public ``https://…`` URL."""
        address = self._setup(
            local_host=self.host,
            local_port=self.port,
            share_token=secrets.token_urlsafe(32),
            share_server_address=None,
            share_server_tls_certificate=None,
        )
        # The tunnel reports an address such as "http://abc.gradio.live"; Gradio serves it over https.
        self.url = urlunparse((SHARE_PROTOCOL, *urlparse(address)[1:]))
        logger.info("share link %s -> %s:%d", self.url, self.host, self.port)
        return self.url

    def close(self) -> None:
        """Stop the tunnel process(es) to our port."""
        from gradio import tunneling

        for tunnel in list(tunneling.CURRENT_TUNNELS):
            if tunnel.local_port == self.port:
                tunnel.kill()
                tunneling.CURRENT_TUNNELS.remove(tunnel)
