"""How a node part calls the balancer's worker queue (web fronts, workers recording jobs, the jobs service's
dispatcher): its TLS context, a keep-alive connection pool, the cluster secret and the request's ids.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx

from webui import keepalive
from webui.cluster_secret import secret_headers
from webui.trace import pass_ids_on


def tls_context(ca_file: Path | None, cert_file: Path | None) -> ssl.SSLContext | bool:
    """How an https worker queue (the balancer on another host) is reached: its certificate verified against
    the cluster's CA, this part's queue certificate presented (the queue admits only cluster parts)."""
    if ca_file is None and cert_file is None:
        return True
    context = ssl.create_default_context(cafile=ca_file)
    if cert_file is not None:
        context.load_cert_chain(cert_file)
    return context


def queue_http(base_url: str, timeout: float, connect_timeout: float, ca_file: Path | None = None,
               cert_file: Path | None = None, transport: httpx.AsyncBaseTransport | None = None) -> httpx.AsyncClient:
    """An httpx client of the worker queue at ``base_url``: TCP keep-alive (a request silent in the queue or on a
    GPU outlives no cut-off balancer by long), the cluster secret (the queue lets in cluster parts only), and the
    request and job ids passed on to the next hop's log."""
    verify = tls_context(ca_file, cert_file)
    return httpx.AsyncClient(
        base_url=base_url, timeout=httpx.Timeout(timeout, connect=min(connect_timeout, timeout)),
        transport=transport or keepalive.async_transport(verify), verify=verify, headers=secret_headers(),
        event_hooks={"request": [pass_ids_on]})
