"""The template's values for the jobs backend: this balancer host's jobs service and other balancers' as
backups, and how long each may stay silent (``values_from_spec`` puts them in ``HAProxyValues.jobs``)."""

from __future__ import annotations

from dataclasses import dataclass

from balancer.config.cluster import ClusterSpec
from balancer.config.jobs_peers import peer_cert_name
from balancer.haproxy import names
from balancer.haproxy.answers import json_body
from balancer.haproxy.servers import ServerSet, tls_options
from balancer.haproxy.syntax import duration
from jobs.contract import MAX_WAIT_S
from webui.contract import JOB_PATHS


@dataclass(frozen=True)
class Jobs:
    """The jobs backend: this balancer host's jobs service, and other balancers' as backups (``jobs.backups``)."""

    server_line: str
    backup_lines: tuple[str, ...]
    timeout: str
    """How long the service may stay silent: a whole ``Prefer: wait``, and more than an event stream's ping."""
    rest_timeout: str
    """How long it may stay silent on a REST generation (``rest_answer_time``)."""
    rest_paths: str
    """The REST generation paths (as the public frontend's ``txn.path`` holds them), space-separated."""
    down_body: str


JOBS_WAIT_MARGIN_S = 15.0
"""Beyond the longest ``Prefer: wait``: the service's own time to answer once the wait is over."""


def rest_answer_time(spec: ClusterSpec) -> float:
    """Seconds the jobs service may be silent on a REST generation (every one with ``jobs.rest``, else those sent
    while no worker is up): its wait for a worker plus its generation, and the service's own time to answer."""
    limits = spec.limits
    return limits.queue_timeout + limits.generation_timeout + JOBS_WAIT_MARGIN_S


def jobs_backup_lines(spec: ClusterSpec) -> tuple[str, ...]:
    """Other balancers' jobs services (``jobs.backups``): with ``tls`` over mutual TLS, the secret never in clear."""
    backups = spec.jobs.backups
    tls = why = ""
    if spec.tls is not None and backups:
        cert_name = peer_cert_name(spec)
        tls, why = tls_options(spec.tls, cert_name), f"; mutual TLS, its certificate must name {cert_name}"
    return tuple(f"    server {names.JOBS_BACKUP_PREFIX}{name} {peer} backup{tls}  # balancer {name}'s{why}"
                 for name, peer in backups.items())


def jobs_values(spec: ClusterSpec, servers: ServerSet) -> Jobs:
    return Jobs(
        server_line=servers.jobs_line(),
        backup_lines=jobs_backup_lines(spec),
        timeout=duration(MAX_WAIT_S + JOBS_WAIT_MARGIN_S),
        rest_timeout=duration(rest_answer_time(spec)),
        rest_paths=" ".join(JOB_PATHS),
        down_body=json_body("unavailable", "The jobs service is starting or restarting; retry shortly."),
    )
