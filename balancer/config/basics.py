"""What every section of the cluster file builds on: its error, the strict model, names, addresses, ``Listener``.

The sections themselves: ``balancer.config.access`` (stats page, TLS), ``balancer.config.limits``,
``balancer.config.health`` (health checks, the sidecar), ``balancer.config.jobs_service``; the nodes and hosts
in ``balancer.config.nodes``, the cluster's top level in ``balancer.config.cluster_fields``. Every default lives
in one of these.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
"""Node names become HAProxy server names and cookie values: keep them plain."""

LOOPBACK = "127.0.0.1"
WILDCARD_HOSTS = {"", "0.0.0.0", "::", "*"}


class ClusterConfigError(ValueError):
    """The cluster description is invalid; the message names the field."""


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class Listener(StrictModel):
    """An address HAProxy or the sidecar listens on."""

    host: str = Field(LOOPBACK, description="Address to bind; 0.0.0.0 exposes it on every interface.")
    port: int = Field(ge=1, le=65535, description="TCP port.")

    @property
    def connect_host(self) -> str:
        """The address a local client should use to reach this listener."""
        return LOOPBACK if self.host in WILDCARD_HOSTS else self.host

    @property
    def url(self) -> str:
        """``http://host:port`` for a local client."""
        return f"http://{self.connect_host}:{self.port}"
