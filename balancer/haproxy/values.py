"""What ``templates/haproxy.cfg.j2`` is filled from: typed values derived from a ``ClusterSpec``.

``values_from_spec`` is a pure function: durations, quoted paths, JSON bodies and answers are prepared
here, so the template only places them. Why each directive is there: docs/haproxy.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from balancer.config.cluster import ClusterSpec
from balancer.haproxy import names
from balancer.haproxy.answers import json_body
from balancer.haproxy.jobs_values import Jobs, jobs_values
from balancer.haproxy.login import Login, login_values
from balancer.haproxy.public_values import Public, public_values
from balancer.haproxy.servers import ServerSet, check_options
from balancer.haproxy.syntax import config_path_arg, duration
from balancer.haproxy.users import read_users_file
from jobs.contract import ACCOUNT_PREFIX, API_PREFIX, SESSIONS_PREFIX
from webui.contract import (
    ADOPT_PATH,
    ADOPTED_EVENT_HEADER,
    CLUSTER_SECRET_ENV,
    CLUSTER_SECRET_HEADER,
    HEALTH_PATH,
    HEARTBEAT_PREFIX,
    INFO_PATH,
    NOT_A_PART,
    QUEUE_CANCEL_PATH,
    QUEUE_DATA_PATH,
    QUEUE_JOIN_PATH,
    READY_PATH,
    RECORD_JOB_HEADER,
    RETRYABLE_STATUSES,
    STICKY_NODE_HEADER,
    WORKER_JOBS_PREFIX,
)
from webui.trace import ID_SHAPE, JOB_ID_HEADER, REQUEST_ID_HEADER


@dataclass(frozen=True)
class Names:
    """The names every section shares: backends, tables, the cookie, the cluster secret's variable."""

    webs: str = names.WEBS_BACKEND
    workers: str = names.WORKERS_BACKEND
    jobs: str = names.JOBS_BACKEND
    probes: str = names.PROBES_BACKEND
    rates: str = names.RATES_TABLE
    sticky: str = names.STICKY_TABLE
    bodies: str = names.BODIES_TABLE
    cookie: str = names.COOKIE_NAME
    sticky_header: str = STICKY_NODE_HEADER
    heartbeat_prefix: str = HEARTBEAT_PREFIX
    secret_env: str = CLUSTER_SECRET_ENV
    secret_header: str = CLUSTER_SECRET_HEADER
    secret_value: str = f'"${{{CLUSTER_SECRET_ENV}}}"'
    """The secret as HAProxy reads it from its environment (never written in the file)."""
    request_id_header: str = REQUEST_ID_HEADER
    job_id_header: str = JOB_ID_HEADER
    record_job_header: str = RECORD_JOB_HEADER
    adopted_event_header: str = ADOPTED_EVENT_HEADER
    id_shape: str = f"^{ID_SHAPE.pattern}$"
    """What a cluster part's request id must look like to be kept (``webui.trace``)."""


@dataclass(frozen=True)
class Process:
    """The ``global`` and ``defaults`` sections."""

    max_connections: int
    socket: str
    buffer_bytes: int
    stick_counters: int
    connect_timeout: str
    client_timeout: str
    request_timeout: str
    request_timeout_body: str
    check_timeout: str
    check_options: str


@dataclass(frozen=True)
class Stats:
    """The stats listener and its one user."""

    bind: str
    user: str
    password: str


@dataclass(frozen=True)
class WorkerQueue:
    """The web fronts' private entry: plain with the cluster secret, or mutual TLS."""

    bind: str
    tls: str
    """``ssl crt ... ca-file ... verify required``, or empty for plain HTTP."""
    refused_body: str
    probe_paths: str = f"{READY_PATH} {HEALTH_PATH} {INFO_PATH}"
    jobs_prefix: str = API_PREFIX
    sessions_prefix: str = SESSIONS_PREFIX
    account_prefix: str = ACCOUNT_PREFIX
    worker_jobs_prefix: str = WORKER_JOBS_PREFIX
    relay: bool = False
    """Whether the jobs service's stream relay reaches the web fronts here (``ClusterSpec.relays_streams``)."""
    relay_paths: str = f"{QUEUE_JOIN_PATH} {QUEUE_DATA_PATH} {QUEUE_CANCEL_PATH} {ADOPT_PATH}"


@dataclass(frozen=True)
class Backends:
    """The webs, workers and worker_probes backends: limits, error bodies and server lines."""

    retries: int
    worker_retries: int
    """The workers backend's: ``retries``, plus one per worker when the jobs service is its backup."""
    retry_statuses: str
    queue_timeout: str
    generation_timeout: str
    webs_down_body: str
    workers_busy_body: str
    probes_down_body: str
    dispatch_agents: bool
    web_handoff: bool
    """Web fronts on jobs hand a call on with a 503 (``webui.web.handoff``): the webs backend retries it."""
    node_host_workers: bool
    cookie_lines: tuple[str, ...]
    web_lines: tuple[str, ...]
    worker_lines: tuple[str, ...]
    holding_line: str
    """The workers' backup: this host's jobs service, which holds REST jobs while no worker is up ("": none)."""
    probe_lines: tuple[str, ...]


@dataclass(frozen=True)
class HAProxyValues:
    """Everything the template needs for one haproxy.cfg."""

    summary: str
    process: Process
    stats: Stats
    login: Login | None
    public: Public
    worker_queue: WorkerQueue
    backends: Backends
    jobs: Jobs | None
    """None when the cluster runs no jobs service (``jobs.enabled`` false)."""
    rates_table: bool
    bodies_table: bool
    sections: tuple[str, ...]
    names: Names = Names()


def values_from_spec(spec: ClusterSpec, servers: ServerSet, local_hosts: bool = True) -> HAProxyValues:
    """The template's values for ``spec`` with ``servers``' lines; reads the users file if one is named."""
    login = None
    if spec.users_file:
        limits = spec.limits
        login = login_values(spec.users_file, read_users_file(spec.users_file), limits.auth_failures_per_address,
                             limits.auth_failures_per_user, limits.auth_session_minutes)
    stats = spec.stats
    return HAProxyValues(
        summary=servers.summary(),
        process=process_values(spec),
        stats=Stats(f"{stats.host}:{stats.port}", stats.user, stats.password.get_secret_value()),
        login=login,
        public=public_values(spec, local_hosts),
        worker_queue=worker_queue_values(spec),
        backends=backend_values(spec, servers),
        jobs=jobs_values(spec, servers) if spec.jobs.enabled else None,
        rates_table=bool(spec.rate_limit_per_minute),
        bodies_table=bool(spec.limits.max_client_bodies),
        sections=tuple(servers.sections()),
    )


def process_values(spec: ClusterSpec) -> Process:
    limits = spec.limits
    return Process(
        max_connections=limits.max_connections,
        socket=config_path_arg(spec.socket_path),
        buffer_bytes=limits.buffer_bytes,
        stick_counters=names.STICK_COUNTERS,
        connect_timeout=duration(limits.connect_timeout),
        client_timeout=duration(limits.client_timeout),
        request_timeout=duration(limits.request_timeout),
        request_timeout_body=json_body("request_timeout",
                                       f"The request was not received within {limits.request_timeout:g} s."),
        check_timeout=duration(spec.health.timeout),
        check_options=check_options(spec),
    )


def worker_queue_values(spec: ClusterSpec) -> WorkerQueue:
    listener, tls = spec.worker_queue, spec.tls
    secured = ""
    if tls is not None and spec.worker_queue_tls:
        secured = (f"ssl crt {config_path_arg(tls.cert_file)} ca-file {config_path_arg(spec.queue_ca())}"
                   " verify required")
    return WorkerQueue(f"{listener.host}:{listener.port}", secured, json_body(*NOT_A_PART), relay=spec.relays_streams)


def backend_values(spec: ClusterSpec, servers: ServerSet) -> Backends:
    limits = spec.limits
    busy = f"No worker could take this job within {limits.queue_timeout:g} s: all are busy or down. Retry later."
    holding_line = servers.holding_line()
    return Backends(
        retries=limits.retries,
        worker_retries=limits.retries + (len(spec.workers) if holding_line else 0),
        retry_statuses=" ".join(map(str, RETRYABLE_STATUSES)),
        queue_timeout=duration(limits.queue_timeout),
        generation_timeout=duration(limits.generation_timeout),
        webs_down_body=json_body("unavailable",
                                 "No web front is up right now (starting or restarting); retry shortly."),
        workers_busy_body=json_body("busy", busy),
        probes_down_body=json_body("not_ready", "No worker is up."),
        web_handoff=spec.jobs.enabled and spec.jobs.web_fronts,
        dispatch_agents=any(node.worker.dispatch_agent_port for node in spec.workers),  # type: ignore[union-attr]
        node_host_workers=any(node.node_host for node in spec.workers),
        cookie_lines=tuple(servers.cookie_lines()),
        web_lines=tuple(servers.web_lines()),
        worker_lines=tuple(servers.worker_lines()),
        holding_line=holding_line,
        probe_lines=tuple(servers.probe_lines()),
    )
