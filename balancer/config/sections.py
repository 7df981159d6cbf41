"""The cluster file's simple sections: listeners, the stats page, limits, health checks, supervision, TLS, jobs.

Each is a strict pydantic model (unknown keys refused, defaults validated); the nodes and hosts that use
them are in ``balancer.config.nodes``, the cluster's top level in ``balancer.config.cluster_fields``. Every
default lives in one of these three.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
"""Node names become HAProxy server names and cookie values: keep them plain."""

LOOPBACK = "127.0.0.1"
WILDCARD_HOSTS = {"", "0.0.0.0", "::", "*"}
QUEUE_CA_CERT = "queue-ca.crt"
"""Beside the cluster CA: the worker queue's CA (``python -m balancer.multihost.certs`` writes it)."""
QUEUE_SUFFIX = "-queue"
"""``NAME-queue.pem``: the queue CA's client certificate for host NAME's web fronts."""


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


class HealthSpec(StrictModel):
    """HAProxy's active health checks (``GET /readyz``) on every node part."""

    interval: float = Field(1.0, gt=0, description="Seconds between checks of a healthy server.")
    fast_interval: float = Field(0.25, gt=0, description="Seconds between checks while a server changes state.")
    down_interval: float = Field(1.0, gt=0, description="Seconds between checks of a down server.")
    timeout: float = Field(2.0, gt=0, description="Seconds a check may take.")
    fall: int = Field(2, ge=1, description="Failed checks before a server is marked DOWN.")
    rise: int = Field(2, ge=1, description="Passed checks before a server is marked UP.")
    slowstart: float = Field(10.0, ge=0, description="Seconds over which a returning server ramps up to full load.")
    dispatch_agent_interval: float = Field(
        0.01, gt=0, description="Seconds between polls of a worker's dispatch agent (its dispatch_agent_port): how "
        "soon the next job comes once a result is being encoded.",
    )
    host_agent_interval: float = Field(
        0.5, gt=0, description="Seconds between HAProxy's questions to a node host's host agent (its parts' states)."
    )

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: object) -> object:
        """A clear error for the old ``agent_interval``, which named both agents' intervals."""
        if isinstance(data, dict) and "agent_interval" in data:
            raise ValueError("agent_interval is now two settings: dispatch_agent_interval (a worker's dispatch "
                             "agent, default 0.01) and host_agent_interval (a node host's host agent, default 0.5)")
        return data


class SidecarSpec(Listener):
    """The supervisor of managed node processes, and its status endpoint."""

    port: int = Field(8405, ge=1, le=65535)
    probe_interval: float = Field(1.0, gt=0, description="Seconds between readiness probes of each process.")
    probe_timeout: float = Field(3.0, gt=0, description="Seconds one readiness probe may take.")
    haproxy_command_timeout: float = Field(
        5.0, gt=0, description="Seconds the sidecar waits for HAProxy's runtime API to answer one command (a "
        "server's state) before it logs the failure and goes on."
    )
    start_timeout: float = Field(
        600.0, gt=0, description="Seconds a (re)started process may take to become ready (model load)."
    )
    stuck_after: float = Field(
        60.0, gt=0, description="Seconds a ready process may fail its readiness probe before it is restarted."
    )
    hang_after: float = Field(
        2.0, gt=0, description="Seconds a started process may leave its probe unanswered while it is frozen "
        "(no CPU used, no thread runnable) before it is killed as hung; a slow or CPU-starved one is left to "
        "stuck_after (balancer/supervision/hang.py)."
    )
    hang_cpu_seconds: float = Field(
        0.05, ge=0, description="CPU seconds a process may use within hang_after and still count as frozen."
    )
    hang_check_interval: float = Field(
        0.25, gt=0, description="Seconds between looks at a process whose probe is late."
    )
    backoff_initial: float = Field(1.0, ge=0, description="Delay before the second restart; doubles each time.")
    backoff_max: float = Field(60.0, ge=0, description="Longest delay between restarts.")
    crash_loop_deaths: int = Field(5, ge=1, description="Deaths within crash_loop_window that mean a crash loop.")
    crash_loop_window: float = Field(300.0, gt=0, description="Seconds over which deaths are counted.")
    stop_grace: float = Field(10.0, ge=0, description="Seconds between SIGTERM and SIGKILL on shutdown.")
    log_max_bytes: int = Field(
        20 * 1024 * 1024, ge=64 * 1024, description="Bytes a log in the run directory (a node part's, HAProxy's) "
        "may reach before it is rotated (balancer/supervision/log_rotation.py).",
    )
    log_keep: int = Field(3, ge=1, le=100, description="Rotated copies kept of each log (NAME.log.1 the newest).")
    log_check_interval: float = Field(5.0, gt=0, description="Seconds between looks at the logs' sizes.")
    history_interval: float = Field(
        10.0, ge=0.1, le=600, description="Seconds between two samples of the operations page's plots (GET "
        "/operations: the last hour, kept in memory).",
    )
    oom_counter_file: Path | None = Field(
        None,
        description="cgroup file with an oom_kill counter (memory.events or memory.oom_control); "
        "default: found from /proc/self/cgroup.",
    )


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


JOBS_STORE_URL_ENV = "PORTRAIT_JOBS_STORE_URL"
"""The job store's URL in launch.py's environment: the one place for a URL with a password; it wins over the
cluster file's ``jobs.store_url``."""
STORE_SCHEMES = ("sqlite", "postgresql")


class JobsSpec(Listener):
    """The jobs service (``python -m jobs``: ``/v1/jobs``, its dispatcher and janitor; docs/jobs.md), run by the
    sidecar of every balancer host and reached through the public frontend's ``/v1/jobs``."""

    enabled: bool = Field(True, description="Run the jobs service on each balancer host and route /v1/jobs to it.")
    port: int = Field(8407, ge=1, le=65535)
    store_url: str | None = Field(
        None, description="The job store: unset for SQLite in the run directory (one balancer host); a PostgreSQL "
        "URL (postgresql+psycopg://USER@HOST/DB) that several balancer hosts share. No password here: give it in "
        f"{JOBS_STORE_URL_ENV} (the whole URL, which wins over this), PGPASSWORD or ~/.pgpass.",
    )
    dispatch_slots: int | None = Field(
        None, ge=1, description="Jobs each balancer's service runs at once; unset: the number of workers.")
    job_timeout: float = Field(
        900.0, gt=0, description="Seconds from a job's acceptance until it fails for want of a worker.")
    retention_days: float = Field(30.0, gt=0, description="Days a job and its results are kept (then 410 Gone).")
    rest: bool = Field(
        False, description="REST POST /generate and /generate/stream go through the jobs service: each is a recorded "
        "job (its id in X-Job-Id) that waits across a gap where every worker is down; about 18 ms more a request "
        "(bench/results/sync-jobs.md).")
    backups: dict[Annotated[str, Field(pattern=NAME_PATTERN)], str] = Field(
        default_factory=dict, description="Other balancer hosts' jobs services (name: HOST:PORT) that serve /v1/jobs "
        "through this HAProxy while its own is down (backup servers, health-checked); they must share its store. "
        "Unset with a floating address and a PostgreSQL store: launch.py names the other balancers' "
        "(balancer/config/jobs_peers.py). With tls they are reached over mutual TLS.")
    peer_host: str | None = Field(
        None, description="With tls: where this service also listens, over mutual TLS (port: port), for the other "
        "balancers' HAProxy. Unset with backups that launch.py names: this balancer's address.")
    peer_cert_name: str | None = Field(
        None, pattern=NAME_PATTERN, description="With tls: the name the backups' certificates carry (HAProxy's "
        "verifyhost). Default: the name in this balancer's own tls.cert_file (a pair may share one).")
    web_fronts: bool = Field(
        True, description="Web fronts run every generation (page, gradio_client, retouch) as a job of this service "
        "(--jobs-url): a reloaded page re-attaches to its job, a page that leaves no longer cancels it (its Cancel "
        "button does), any web front serves any job's result; the page and gradio_client see the same info, "
        "progress and errors as without it (docs/jobs.md).")
    sign_in: bool = Field(
        False, description="Members of accounts sign in to the studio page with their password (python -m jobs "
        "accounts set-password) and the page's jobs become their account's; the session survives a web front's "
        "death (docs/accounts.md). Needs web_fronts.")

    @model_validator(mode="after")
    def _check_store_url(self) -> JobsSpec:
        if self.store_url is None:
            return self
        parts = urlsplit(self.store_url)
        if parts.scheme.split("+")[0] not in STORE_SCHEMES:
            raise ValueError(f"jobs.store_url: {parts.scheme or 'no scheme'}: expected sqlite:///PATH or "
                             "postgresql+psycopg://USER@HOST/DB")
        if parts.password is not None:
            raise ValueError(f"jobs.store_url: no password in the cluster file (every reader of it sees it); set "
                             f"{JOBS_STORE_URL_ENV} in the balancer's environment, PGPASSWORD or ~/.pgpass")
        return self
