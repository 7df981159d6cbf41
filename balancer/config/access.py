"""Who may reach the cluster's private parts: the stats page's login (``stats:``) and mutual TLS (``tls:``)."""

from __future__ import annotations

import secrets
from pathlib import Path

from pydantic import Field, SecretStr, model_validator

from balancer.config.basics import Listener, StrictModel

QUEUE_CA_CERT = "queue-ca.crt"
"""Beside the cluster CA: the worker queue's CA (``python -m balancer.multihost.certs`` writes it)."""
QUEUE_SUFFIX = "-queue"
"""``NAME-queue.pem``: the queue CA's client certificate for host NAME's web fronts."""

STATS_PASSWORD_ENV = "PORTRAIT_STATS_PASSWORD"
"""The stats page password in the environment (launch.py, the k8s balancer pod, python -m balancer.cli): never
a command-line argument, which every user of the machine reads in ps."""


class StatsSpec(Listener):
    """HAProxy's stats page and Prometheus exporter (``/metrics``), always password-protected."""

    port: int = Field(8404, ge=1, le=65535)
    user: str = Field("admin", min_length=1, pattern=r"^[^\s:]+$", description="Stats page user name.")
    password: SecretStr = Field(
        default_factory=lambda: SecretStr(secrets.token_urlsafe(12)),
        description="Stats page password (default: random, printed by launch.py).",
    )

    @model_validator(mode="after")
    def _check_password(self) -> StatsSpec:
        value = self.password.get_secret_value()
        if not value or any(ch.isspace() for ch in value):
            raise ValueError("stats.password: must be non-empty and contain no whitespace")
        return self


class TLSSpec(StrictModel):
    """Mutual TLS between the balancers and the nodes on other hosts (``python -m balancer.multihost.certs``'s files).

    HAProxy talks to every remote node (``managed: false``, or on a node host) over TLS, presenting
    ``cert_file`` and accepting only a node certificate that ``ca_file`` signed and that names the
    node's host (``cert_name``). A node host's parts serve with that host's certificate
    (``node_hosts[].cert_file``) and accept only balancers (``balancer.multihost.part_tls``). Nodes on the
    balancer's own host stay plain HTTP on loopback. Each host needs only ``ca_file`` and its own
    certificate: ``cert_file`` is checked where HAProxy runs, a node host's certificate on that host.

    The worker queue, served over TLS (``worker_queue``), accepts only web fronts: clients with a
    certificate of the separate queue CA (``queue_ca_file``), which no node trusts. A node host's web
    fronts present ``node_hosts[].queue_cert_file``, the balancer's own ones ``queue_cert_file``.
    """

    ca_file: Path = Field(description="The cluster's CA certificate (ca.crt): node certificates must chain to it.")
    cert_file: Path = Field(description="The balancer's certificate and private key in one PEM file (NAME.pem; "
                            "a pair of balancers may share one naming the floating address).")
    worker_queue: bool | None = Field(
        None,
        description="Serve the worker queue over TLS with cert_file (remote web fronts verify it with ca_file); "
        "unset: when the worker queue is not on loopback.",
    )
    queue_ca_file: Path | None = Field(
        None, description="With a TLS worker queue: the queue CA's certificate (queue-ca.crt), where HAProxy runs; "
        "the worker queue accepts only clients whose certificate it signed. Default: queue-ca.crt beside ca_file.",
    )
    queue_cert_file: Path | None = Field(
        None, description="With a TLS worker queue: the client certificate and key the balancer's own web fronts "
        "present to it. Default: cert_file's name with -queue (lb.pem: lb-queue.pem), beside it.",
    )

    @model_validator(mode="after")
    def _check_files(self) -> TLSSpec:
        if not self.ca_file.is_file():
            raise ValueError(f"tls.ca_file: {self.ca_file} is not a file")
        return self
