"""What the balancer allows its clients (``limits:``): waiting times, sizes, connections, rates, logins."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from balancer.config.basics import StrictModel

EXPOSED_RATE_LIMIT_PER_MINUTE = 120
"""Default generations per client address a minute when the public listener is not on loopback: a whole office
behind one NAT address (a dozen people, one portrait each every few seconds) is not refused."""
EXPOSED_CLIENT_CONNECTIONS = 32
"""Default concurrent connections per client when the public listener is not on loopback."""
LOOPBACK_CONNECTION_SHARE = 4
"""On loopback, one client may hold at most max_connections / this many connections by default."""


class LimitsSpec(StrictModel):
    """What the balancer allows: waiting time, sizes, rates."""

    queue_timeout: float = Field(
        60.0, gt=0, description="Seconds a generation may wait for a free worker before a 503."
    )
    generation_timeout: float = Field(600.0, gt=0, description="Seconds one generation may take on a worker.")
    client_timeout: float = Field(
        300.0, gt=0, description="Seconds a client connection may stay idle (covers Gradio's event streams)."
    )
    connect_timeout: float = Field(
        2.0, gt=0, description="Seconds to connect to a node before trying another (with tls: the TLS handshake "
        "included, which needs the node's event loop; one failed connect marks the node down)."
    )
    request_timeout: float = Field(
        30.0, gt=0, description="Seconds a client may take to send its headers and a buffered body (408 after)."
    )
    body_timeout: float = Field(
        60.0, gt=0, description="Seconds a web front gives a client to send a body too large to buffer (408 after)."
    )
    retries: int = Field(3, ge=0, le=10, description="Times a failed request is replayed on another server.")
    max_body_bytes: int = Field(
        16 * 1024 * 1024, ge=1024, description="Largest request body, uploads included (413 above)."
    )
    buffer_bytes: int = Field(
        2 * 1024 * 1024,
        ge=131072,
        le=64 * 1024 * 1024,
        description="HAProxy buffer size. A REST job's whole body must fit (see rest_body_bytes): it is received "
        "in full before a worker is taken, and can be replayed on another worker. Costs up to this much memory "
        "per open connection.",
    )
    max_header_bytes: int = Field(
        32 * 1024, ge=4096, le=64 * 1024, description="Largest request line + headers (431 above)."
    )
    max_connections: int = Field(1024, ge=16, description="Most concurrent client connections in all.")
    max_client_connections: int | None = Field(
        None,
        ge=0,
        description="Concurrent connections one client may hold (429 above, closed at twice this); unset: "
        f"{EXPOSED_CLIENT_CONNECTIONS} when the site is exposed, max_connections/{LOOPBACK_CONNECTION_SHARE} "
        "on loopback; 0: off.",
    )
    max_client_bodies: int = Field(
        16, ge=0, description="Requests with a body one client may have in flight (each holds up to buffer_bytes "
        "of HAProxy's memory while it arrives; 429 above); 0: off.",
    )
    auth_failures_per_address: int = Field(
        10, ge=1, description="Failed logins per minute from one client before further logins get 429 (basic auth)."
    )
    auth_failures_per_user: int = Field(
        30, ge=1, description="Failed logins per minute for one user name, from anywhere, before its logins get 429."
    )
    auth_session_minutes: int = Field(
        10, ge=1, description="Minutes a checked login is remembered (by a hash of its header), so later requests "
        "skip the password hash.",
    )
    rate_limit_per_minute: int | None = Field(
        None,
        ge=0,
        description="Generations one client may start per minute (429 above); unset: "
        f"{EXPOSED_RATE_LIMIT_PER_MINUTE} when the public listener is exposed, off on loopback; 0: off.",
    )
    rate_limit_key: Literal["src", "x-forwarded-for"] = Field(
        "src",
        description="How clients are told apart: source address, or the last X-Forwarded-For address "
        "(only behind a trusted proxy that sets it).",
    )

    @property
    def rest_body_bytes(self) -> int:
        """Largest REST job body: what fits in one HAProxy buffer beside the headers."""
        return min(self.max_body_bytes, self.buffer_bytes - self.max_header_bytes - 16384)
