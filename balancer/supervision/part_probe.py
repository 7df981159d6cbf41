"""How the sidecar probes a part: an HTTP client of the node's parts (over mutual TLS when the host has it:
``ProbeTLS``), and a worker's stall report read from its ``/readyz`` answer."""

from __future__ import annotations

import ssl
from dataclasses import dataclass

import httpx

from webui.contract import STALLED_KEY


@dataclass(frozen=True)
class ProbeTLS:
    """How a sidecar's probe reaches a part over mutual TLS: its client context and the name to verify."""

    context: ssl.SSLContext
    server_name: str

    @property
    def extensions(self) -> dict[str, str]:
        """httpx request extensions: check the part's certificate against ``server_name``, not the address."""
        return {"sni_hostname": self.server_name}


def part_client(timeout: float, probe_tls: ProbeTLS | None = None) -> httpx.AsyncClient:
    """A client of a node's parts (the sidecar's probes, their request counts). Over TLS it keeps no idle
    connection: a part's TLS server, stopping, waits on each open connection for the peer's close_notify
    (asyncio's ``ssl_shutdown_timeout``, 30 s), which an idle pooled connection never reads, so the part
    outlived its stop grace and was SIGKILLed at every restart."""
    if probe_tls is None:
        return httpx.AsyncClient(timeout=timeout)
    return httpx.AsyncClient(timeout=timeout, verify=probe_tls.context,
                             limits=httpx.Limits(max_keepalive_connections=0))


def stall_report(response: httpx.Response) -> str | None:
    """A worker's stall report in its 503 ``/readyz`` answer (``webui.worker.progress``), else None."""
    if response.status_code != 503:
        return None
    try:
        report = response.json().get(STALLED_KEY)
    except (ValueError, AttributeError):
        return None
    return report if isinstance(report, str) and report else None
