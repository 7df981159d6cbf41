"""Render a readable, commented ``haproxy.cfg`` from a ``ClusterSpec``.

The layout (one section each, every one commented in the output):

- ``frontend public``: browsers, ``gradio_client`` and REST. ``/generate`` and
  ``/generate/stream`` go to the ``workers`` backend, everything else to ``webs``.
- ``frontend worker_queue``: the private address web fronts send their jobs to; it answers
  ``/readyz`` itself (ready while at least one worker is UP) so that probes never queue.
- ``backend webs``: sticky Gradio sessions (cookie, then the stale cookie's value, then the
  Gradio ``session_hash``: see ``_affinity_rules``).
- ``backend workers``: least-loaded worker, one job per worker, HAProxy's queue as the
  cluster-wide FIFO, L7 retries that replay a job whose worker died.
- ``frontend stats``: password-protected stats page and Prometheus exporter on loopback.

Validate the result with ``balancer.haproxy.process.validate_config`` (``haproxy -c``) before use.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from balancer.config.cluster import ClusterSpec, NodeSpec
from balancer.config.sections import ClusterConfigError
from balancer.haproxy.agent import agent_send
from balancer.haproxy.answers import answer as _answer
from balancer.haproxy.answers import json_body as _json_body
from balancer.haproxy.login import LoginRules
from webui.contract import CLUSTER_SECRET_ENV as SECRET_ENV
from webui.contract import CLUSTER_SECRET_HEADER as SECRET_HEADER
from webui.contract import (
    HEALTH_PATH,
    HEARTBEAT_PREFIX,
    INFO_PATH,
    JOB_EVENT_INDICES,
    JOB_PATHS,
    METRICS_PATH,
    NOT_A_PART,
    PERSISTENCE_COOKIE,
    READY_PATH,
    RETRYABLE_STATUSES,
    STICKY_NODE_HEADER,
    TRAFFIC_PATH,
)

COOKIE_NAME = PERSISTENCE_COOKIE
"""The persistence cookie HAProxy inserts; its value is the node name."""
COOKIE_OPTIONS = "insert indirect nocache httponly attr SameSite=Lax"
"""Inserted by HAProxy, never seen by the node, not cached, not readable by scripts, same-site only."""

WEBS_BACKEND = "webs"
WORKERS_BACKEND = "workers"
PROBES_BACKEND = "worker_probes"
PART_BACKENDS = {"web": WEBS_BACKEND, "worker": WORKERS_BACKEND}
"""Node part -> the HAProxy backend its server is in."""
RATES_TABLE = "job_rates"
"""A backend that only holds the per-client generation rate table."""
STICKY_TABLE = "sticky_requests"
"""A backend that only holds the table of UI requests in flight per persistence cookie value."""
BODIES_TABLE = "client_bodies"
"""A backend that only holds the table of requests with a body in flight per client."""
STICK_COUNTERS = 7
"""Per-client tables the public frontend tracks at once: sc0 connections, sc1 job rates, sc2 sticky UI
requests, sc3-sc5 logins (``balancer.haproxy.login``), sc6 bodies."""
DIRECT_RUN_PATHS = ("/gradio_api/run/", "/gradio_api/api/")
"""Gradio routes that run an event outside its queue (and around its limits): never public, but for
``PAGE_RUN_PATH``."""
PAGE_RUN_PATH = "/gradio_api/run/predict"
"""Where the page posts its small unqueued events (presets, sizes, reuse seed); the web front refuses a
queued event there (``webui/web/gradio_routes.py``)."""

# crypt(3) hashes HAProxy's userlist understands: SHA-256, SHA-512, yescrypt, bcrypt.
_HASH_PATTERN = re.compile(r"^\$(5|6|y|2[aby])\$\S+$")
_USER_PATTERN = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")


@dataclass(frozen=True)
class User:
    """One HTTP basic auth user with a crypt(3) password hash."""

    name: str
    password_hash: str


def read_users_file(path: Path) -> list[User]:
    """Parse a users file: ``name:hash`` a line (``openssl passwd -6``), ``#`` comments allowed."""
    users = []
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, password_hash = line.partition(":")
        if not sep or not _USER_PATTERN.match(name) or not _HASH_PATTERN.match(password_hash):
            raise ClusterConfigError(
                f"users_file {path} line {number}: expected 'name:hash' with a crypt hash "
                "($5$, $6$, $y$ or $2b$; e.g. from 'openssl passwd -6')"
            )
        users.append(User(name, password_hash))
    if not users:
        raise ClusterConfigError(f"users_file {path}: no users")
    return users


def duration(seconds: float) -> str:
    """An HAProxy time value: whole seconds as ``Ns``, anything else in milliseconds."""
    if seconds == int(seconds):
        return f"{int(seconds)}s"
    return f"{round(seconds * 1000)}ms"


def config_path_arg(path: Path) -> str:
    """An absolute file path as one double-quoted config argument."""
    text = str(path.resolve())
    if '"' in text or "\\" in text:
        raise ClusterConfigError(f"{text}: file paths in haproxy.cfg must not contain quotes or backslashes")
    return f'"{text}"'


def check_options(spec: ClusterSpec) -> str:
    """Every server's health check settings: the ``default-server`` line, and given in full to a server added
    at runtime (``add server`` inherits no ``default-server``)."""
    health = spec.health
    return (f"check inter {duration(health.interval)} fastinter {duration(health.fast_interval)}"
            f" downinter {duration(health.down_interval)} fall {health.fall} rise {health.rise}"
            f" slowstart {duration(health.slowstart)} observe layer4 error-limit 1 on-error mark-down")


@dataclass(frozen=True)
class DynamicServer:
    """One server to add over the runtime API: ``add server BACKEND/NAME ADDRESS OPTIONS``."""

    backend: str
    name: str
    address: str
    options: str
    """The same options as its line in haproxy.cfg, with the default-server's check settings spelled out."""


class ServerSet(Protocol):
    """Where the web fronts' and workers' server lines come from."""

    def summary(self) -> str:
        """One line for the header: which servers."""

    def sections(self) -> list[str]:
        """Extra top-level sections the server lines need (e.g. ``resolvers``)."""

    def cookie_lines(self) -> list[str]:
        """The webs backend's persistence cookie (HAProxy inserts it, the value names the server)."""

    def web_lines(self) -> list[str]:
        """The ``webs`` backend's servers."""

    def worker_lines(self) -> list[str]:
        """The ``workers`` backend's servers (one job each)."""

    def probe_lines(self) -> list[str]:
        """The ``worker_probes`` backend's servers (the workers, for /readyz and /info)."""


class StaticServers:
    """The cluster file's nodes, one server line each; remote nodes over mutual TLS when ``tls`` is set."""

    def __init__(self, spec: ClusterSpec) -> None:
        self.spec = spec

    def summary(self) -> str:
        return f"# Nodes: {', '.join(node.name for node in self.spec.nodes) or 'none'}."

    def sections(self) -> list[str]:
        return []

    def cookie_lines(self) -> list[str]:
        return [f"    cookie {COOKIE_NAME} {COOKIE_OPTIONS}"]

    def web_lines(self) -> list[str]:
        return [self._line(node, node.web.address, self._web_options(node)) for node in self.spec.webs]  # type: ignore[union-attr]

    def worker_lines(self) -> list[str]:
        return [self._line(node, node.worker.address, self._worker_options(node))  # type: ignore[union-attr]
                for node in self.spec.workers]

    def _web_options(self, node: NodeSpec) -> str:
        return f"cookie {node.name}" + self._agent(node, WEBS_BACKEND)

    def _worker_options(self, node: NodeSpec) -> str:
        return "maxconn 1" + self._agent(node, WORKERS_BACKEND)

    def dynamic_servers(self, node: NodeSpec) -> list[DynamicServer]:
        """A node's servers as the runtime API adds them (a worker before the probe server that tracks it),
        with the very options of their haproxy.cfg lines: the two cannot drift apart."""
        checks = " " + check_options(self.spec)
        servers = []
        if node.worker is not None:
            servers += [
                DynamicServer(WORKERS_BACKEND, node.name, node.worker.address,
                              self._worker_options(node) + checks + self._tls(node)),
                # HAProxy 2.8 cannot track a dynamic server: this one checks the worker itself.
                DynamicServer(PROBES_BACKEND, node.name, node.worker.address, check_options(self.spec)
                              + self._tls(node)),
            ]
        if node.web is not None:
            servers.append(DynamicServer(WEBS_BACKEND, node.name, node.web.address,
                                         self._web_options(node) + checks + self._tls(node)))
        return servers

    def _agent(self, node: NodeSpec, backend: str) -> str:
        """The server's one agent check (HAProxy allows one): on a node host, its host agent (the part's state,
        ``multihost.host_agent``); else a worker's dispatch agent (its maxconn, webui/worker/dispatch_agent.py).

        A node host's servers also end their sessions when checks mark them down (a vanished host sends no
        reset: ended, their jobs are replayed at once by retry-on empty-response instead of waiting out
        timeout server), and a failed connection only speeds up checks (marking down at once would end the
        very session about to retry elsewhere)."""
        health = self.spec.health
        port = node.worker.dispatch_agent_port if backend == WORKERS_BACKEND else None  # type: ignore[union-attr]
        if node.node_host is not None:
            # A worker's dispatch agent answers through the host agent (it passes it on): asked as often.
            interval = health.dispatch_agent_interval if port else health.host_agent_interval
            host = self.spec.node_host(node.node_host)
            return (f" agent-check agent-addr {host.address} agent-port {host.host_agent_port}"
                    f" agent-inter {duration(interval)} agent-send {agent_send(backend, node.name)}"
                    " on-error fastinter on-marked-down shutdown-sessions")
        if not port:
            return ""
        # The line names this HAProxy's server: the agent keeps each poller's state apart (two balancers).
        return (f" agent-check agent-port {port} agent-inter {duration(health.dispatch_agent_interval)}"
                f" agent-send {agent_send(backend, node.name)}")

    def probe_lines(self) -> list[str]:
        return [
            self._line(node, node.worker.address, f"track {WORKERS_BACKEND}/{node.name} no-check")  # type: ignore[union-attr]
            for node in self.spec.workers
        ]

    def _line(self, node: NodeSpec, address: str, options: str) -> str:
        if node.node_host is not None:
            where = (f"on node host {node.node_host}: state from its host agent; sessions end when checks mark it "
                     "down, so a lost host's jobs replay")
        else:
            where = "supervised by the sidecar" if node.managed else "remote, not supervised here"
        tls = self._tls(node)
        if tls:
            where += "; mutual TLS, its certificate must name " + node.tls_name()
        return f"    server {node.name} {address} {options}{tls}  # {where}"

    def _tls(self, node: NodeSpec) -> str:
        """TLS options for a node on another host (``managed: false``, or on a node host): our client
        certificate, and its certificate checked against the CA and its host's name (health checks too).

        HAProxy 2.8's agent checks stay plain TCP (they always use the raw transport, whatever
        ``ssl``/``check-ssl`` say), so a node host's host agent answers without TLS."""
        tls = self.spec.tls
        if tls is None or not self.spec.uses_tls(node):
            return ""
        return (f" ssl verify required ca-file {config_path_arg(tls.ca_file)} crt {config_path_arg(tls.cert_file)}"
                f" verifyhost {node.tls_name()}")


class HAProxyConfigRenderer:
    """Turns one ``ClusterSpec`` into the text of ``haproxy.cfg``.

    ``servers`` gives the node server lines (default: the spec's nodes); ``local_hosts`` adds this
    machine's addresses to the allowed Host headers when the public listener binds every interface.
    """

    def __init__(self, spec: ClusterSpec, servers: ServerSet | None = None, local_hosts: bool = True) -> None:
        self.spec = spec
        self.servers = servers or StaticServers(spec)
        self.local_hosts = local_hosts
        self.users = read_users_file(spec.users_file) if spec.users_file else []
        limits = spec.limits
        self.login = LoginRules(self.users, limits.auth_failures_per_address, limits.auth_failures_per_user,
                                limits.auth_session_minutes) if self.users else None

    def render(self) -> str:
        """The whole configuration file."""
        sections = [
            self._header(),
            self._global(),
            self._defaults(),
            self._userlists(),
            self._public_frontend(),
            self._worker_queue(),
            self._webs_backend(),
            self._workers_backend(),
            self._probes_backend(),
            self._rates_table(),
            self._sticky_table(),
            self._bodies_table(),
            _block(*self.login.tables()) if self.login else "",
            self._stats_frontend(),
            *self.servers.sections(),
        ]
        return "\n".join(section for section in sections if section) + "\n"

    def _header(self) -> str:
        return _block(
            "# portrait-ha load balancer: generated by balancer/haproxy/config.py, do not edit by hand.",
            "# Change the cluster file or launch.py flags instead, then restart.",
            self.servers.summary(),
        )

    def _global(self) -> str:
        limits = self.spec.limits
        return _block(
            "# Process-wide settings. HAProxy runs in the foreground as a child of launch.py.",
            "global",
            "    log stderr format raw local0 info",
            "    # A log line keeps at most this much of a request's URI (a client's long URIs fill no disk).",
            "    tune.http.logurilen 256",
            f"    maxconn {limits.max_connections}",
            "    # One thread: HAProxy 2.8 checks a server's free slots (maxconn) and takes one in",
            "    # separate steps, and its threads race between them while L7 retries release and",
            "    # re-take slots (a 503 replayed elsewhere frees its slot and dequeues the next job at",
            "    # once): seen here, a worker with maxconn 1 held 2 jobs while the other sat idle.",
            "    # Upstream: haproxy issue 2744, commits 5541d4995d, 111ea83ed (3.1/3.2). One",
            "    # thread serves this load (a few jobs a second, a studio's page traffic) easily.",
            "    nbthread 1",
            "    # The runtime API: the sidecar puts servers in maint/ready through it.",
            "    # mode 600: only the user running the cluster can open it.",
            f"    stats socket {config_path_arg(self.spec.socket_path)} mode 600 level admin",
            "    stats timeout 10s",
            "    # A REST job is received whole into one buffer before a worker is taken (a slow",
            "    # uploader holds no worker) and can then be replayed on another worker if its own",
            "    # dies (L7 retries). Bodies larger than this are refused on REST routes and stream",
            "    # to a web front elsewhere (Gradio uploads), which bounds them in bytes and time.",
            f"    tune.bufsize {limits.buffer_bytes}",
            "    # Per-client tables the public frontend tracks at once (connections, rates, logins, bodies).",
            f"    tune.stick-counters {STICK_COUNTERS}",
            *_with_secret(
                "    # The cluster secret (launch.py puts it in HAProxy's environment, never in this file).",
                f'    set-var proc.cluster_secret str("${{{SECRET_ENV}}}")',
            ),
        )

    def _defaults(self) -> str:
        limits, health = self.spec.limits, self.spec.health
        return _block(
            "# Defaults for every frontend and backend below.",
            "defaults",
            "    mode http",
            "    log global",
            "    # httplog's fields with the method and path alone: no query string (session hashes, ids).",
            '    log-format "%ci:%cp [%tr] %ft %b/%s %TR/%Tw/%Tc/%Tr/%Ta %ST %B %CC %CS %tsc %ac/%fc/%bc/%sc/%rc '
            '%sq/%bq %hr %hs %HM %{+Q}HP"',
            "    option dontlognull",
            "    # A client that leaves takes its request with it: a queued job is never dispatched",
            "    # and a running one is closed on the node, which then stops generating.",
            "    option abortonclose",
            "    # Streamed progress is small chunks: send each at once instead of coalescing them",
            "    # (MSG_MORE). Without it a stream's first line reached the client 210 ms after the",
            "    # request instead of 6 ms (2 ms straight to the worker; python -m bench.stream).",
            "    option http-no-delay",
            f"    timeout connect {duration(limits.connect_timeout)}",
            "    # Idle client connections; Gradio's event streams send a heartbeat every 15 s.",
            f"    timeout client {duration(limits.client_timeout)}",
            f"    timeout server {duration(limits.client_timeout)}",
            "    # Headers and a buffered body must arrive within this (408 after): no slow loris.",
            f"    timeout http-request {duration(limits.request_timeout)}",
            "    timeout http-keep-alive 10s",
            "    # HAProxy's own timeout answer, JSON like every other error (see the public frontend",
            "    # for browsers). Malformed HTTP still gets HAProxy's built-in HTML 400: HAProxy 2.8",
            "    # ignores custom pages for errors its parser finds (fixed in 3.2).",
            "    http-error status 408 content-type application/json string "
            + _json_body("request_timeout", f"The request was not received within {limits.request_timeout:g} s."),
            f"    timeout check {duration(health.timeout)}",
            "    # Health checks: sub-2-second detection of a dead server, a gentle ramp-up when it",
            "    # returns, and a refused connection marks it down at once (layer 4: a busy node",
            "    # that answers 503 is healthy and must stay in rotation). No 'on-marked-down",
            "    # shutdown-sessions': it would abort the job of a draining or slow-but-alive node; a",
            "    # hung one is killed by the sidecar (before its checks fail) and its job replayed.",
            "    # Servers on node hosts override both (see their lines).",
            f"    default-server {check_options(self.spec)}",
        )

    def _userlists(self) -> str:
        stats = self.spec.stats
        lines = [
            "# Who may open the stats page (the config file is written with mode 600).",
            "userlist stats_users",
            f"    user {stats.user} insecure-password {stats.password.get_secret_value()}",
        ]
        if self.login:
            lines += self.login.userlists(str(self.spec.users_file))
        return _block(*lines)

    def _public_frontend(self) -> str:
        spec, limits = self.spec, self.spec.limits
        lines = [
            "# The public entry: browser UI, gradio_client and REST /generate. Every client may be",
            "# hostile: each rule below bounds what one request or one client can cost.",
            "frontend public",
            f"    bind {spec.public.host}:{spec.public.port}",
            *self._connection_rules(),
            "    # Our own answers: a readable page for browsers, JSON for API clients.",
            "    acl wants_html req.hdr(accept) -m sub text/html",
            *self._identity_rules(),
            "    # Request line + headers beyond this are refused before anything else.",
            *_answer(431, "headers_too_large", f"The request headers are larger than {limits.max_header_bytes} bytes.",
                     f"{{ req.hdrs,length gt {limits.max_header_bytes} }}", "Request headers too large"),
            *self._path_rules(),
            *self._host_rules(),
            *self._connection_cap_rules(),
            *(self.login.rules() if self.login else []),
            "    # Answered here, never by a node: public probes learn nothing about the inside.",
            "    http-request return status 200 content-type application/json string "
            f"'{{\"status\": \"ok\"}}' if {{ var(txn.path) -m str {HEALTH_PATH} }}",
            f"    acl is_ready var(txn.path) -m str {READY_PATH}",
            "    http-request return status 200 content-type application/json string '{\"ready\": true}'"
            f" if is_ready {{ nbsrv({WEBS_BACKEND}) gt 0 }} {{ nbsrv({WORKERS_BACKEND}) gt 0 }}",
            "    http-request return status 503 content-type application/json hdr Retry-After 5 string "
            "'{\"ready\": false}' if is_ready",
            "    # A node's own counters (metrics, requests in flight) are for its host, not the public;",
            "    # Gradio's direct routes run events outside its queue and around its limits (the page's own",
            "    # unqueued events excepted: the web front refuses a queued one there).",
            f"    acl internal var(txn.path) -m str {METRICS_PATH} {TRAFFIC_PATH}",
            f"    acl internal var(txn.path) -m beg {' '.join(DIRECT_RUN_PATHS)}",
            f"    acl page_run var(txn.path) -m str {PAGE_RUN_PATH}",
            *_answer(404, "not_found", "Not found.", "internal !page_run", "Not found"),
            f"    acl is_rest var(txn.path) -m str {' '.join(JOB_PATHS)}",
            *self._body_rules(),
            *self._job_rules(),
            *self._rate_rules(),
            *self._cross_site_rules(),
            *self._availability_rules(),
            *self._job_count_rules(),
            *self._affinity_rules(),
            "    # UI requests in flight per persistence cookie value (the node a client is stuck to, even",
            "    # while that node is out): a rolling restart gives a restarted web front its clients back",
            f"    # only when none of theirs is in flight (table: backend {STICKY_TABLE}); a heartbeat is no job.",
            f"    http-request track-sc2 req.cook({COOKIE_NAME}) table {STICKY_TABLE}"
            f" if !is_rest {{ req.cook({COOKIE_NAME}) -m found }} !{{ var(txn.path) -m beg {HEARTBEAT_PREFIX} }}",
            "    # The same, told to the web front (it never sees the cookie: 'indirect'), which counts its",
            "    # requests per value: a node host's sidecar, with no HAProxy to ask, adds up these counts",
            "    # of every web front (webui/traffic.py). A client's own header of that name is dropped.",
            f"    http-request del-header {STICKY_NODE_HEADER}",
            f"    http-request set-header {STICKY_NODE_HEADER} %[req.cook({COOKIE_NAME})]"
            f" if {{ req.cook({COOKIE_NAME}) -m found }}",
        ]
        if spec.security_headers:
            lines += [
                "    # Security headers on every response.",
                "    http-response set-header X-Content-Type-Options nosniff",
                "    http-response set-header X-Frame-Options SAMEORIGIN",
                "    http-response set-header Referrer-Policy strict-origin-when-cross-origin",
            ]
        lines += [
            "    # REST generations go straight to the workers' queue; everything else is the UI.",
            f"    use_backend {WORKERS_BACKEND} if is_rest",
            f"    default_backend {WEBS_BACKEND}",
        ]
        return _block(*lines)

    def _identity_rules(self) -> list[str]:
        """Who the client is, decided here: what a client says about itself is dropped."""
        trusted_proxy = self.spec.limits.rate_limit_key == "x-forwarded-for"
        lines = ["    # The client's address, for the nodes' logs and the per-client limits."]
        if trusted_proxy:
            lines += [
                "    # Behind a trusted proxy: the last X-Forwarded-For address is the one it added.",
                "    http-request set-var(txn.client) req.hdr_ip(x-forwarded-for,-1)",
                "    http-request set-var(txn.client) src if !{ var(txn.client) -m found }",
            ]
        else:
            lines += ["    http-request set-var(txn.client) src"]
        lines += [
            "    # Replace, never append: a client cannot pose as another address or host.",
            "    http-request del-header Forwarded",
            "    http-request del-header X-Real-IP",
            "    http-request del-header X-Forwarded-Host",
        ]
        if not trusted_proxy:
            lines += ["    http-request del-header X-Forwarded-Proto"]
        lines += [
            "    http-request set-header X-Forwarded-For %[var(txn.client)]",
            "    # The scheme the client used (a trusted proxy's word, else this plain listener's): a web",
            "    # front reached over TLS would otherwise give the page https links on an http site.",
            "    http-request set-header X-Forwarded-Proto http unless { req.hdr(x-forwarded-proto) -m found }",
        ]
        return lines

    def _host_rules(self) -> list[str]:
        """Only this site's own names: Gradio builds the page's URLs from the Host header."""
        allowed = self.spec.allowed_hosts(self.local_hosts)
        exact = [host for host in allowed if not host.startswith(".")]
        suffixes = [host for host in allowed if host.startswith(".")]
        lines = [
            "    # The Host header must name this site (public_hosts, this machine's addresses):",
            "    # Gradio builds the page's links from it, so a forged one must never be reflected.",
            "    http-request set-var(txn.host) req.hdr(host),lower",
            f"    acl known_host var(txn.host) -m str {' '.join(exact)}",
        ]
        if suffixes:
            lines.append(f"    acl known_host var(txn.host),field(1,:) -m end {' '.join(suffixes)}")
        lines += _answer(421, "unknown_host", "This server does not serve that host name.", "!known_host",
                         "Unknown host")
        return lines

    @staticmethod
    def _path_rules() -> list[str]:
        detail = "The path is not valid percent-encoding."
        return [
            "    # The path as the nodes route it (they decode %XX once): every path rule reads this, so",
            "    # /%74raffic is /traffic here too. A path that does not decode cleanly is refused.",
            "    http-request set-var(txn.path) path,url_dec",
            *_answer(400, "bad_path", detail, "!{ var(txn.path) -m found }", "Bad path"),
            *_answer(400, "bad_path", detail, "{ path -m sub %00 }", "Bad path"),
        ]

    @staticmethod
    def _job_rules() -> list[str]:
        """The one definition of a job request, used by every limit (rate, cross-site)."""
        return [
            "    # Requests that start a generation: REST jobs, Gradio's call API, and a queue/join for one",
            "    # of the page's job events (by fn_index; a join whose body names none counts too).",
            "    acl is_join var(txn.path) -m end /queue/join",
            f"    acl job_event req.body,json_query('$.fn_index') -m int {' '.join(map(str, JOB_EVENT_INDICES))}",
            "    acl named_event req.body,json_query('$.fn_index') -m found",
            "    http-request set-var(txn.job) bool(1) if is_rest",
            "    http-request set-var(txn.job) bool(1) if METH_POST { var(txn.path) -m beg /gradio_api/call/ }",
            "    http-request set-var(txn.job) bool(1) if is_join job_event || is_join !named_event",
            "    acl is_job var(txn.job) -m bool",
            "    # Requests a foreign page must not make a browser send: anything but a read, and any job",
            "    # (a REST GET /generate with its fields in the query runs one).",
            "    acl is_guarded method POST PUT PATCH DELETE",
            "    acl is_guarded var(txn.job) -m bool",
        ]

    def _connection_rules(self) -> list[str]:
        """Per-client connection cap by source address, counted from accept on (keep-alive included)."""
        connections = self.spec.max_client_connections
        if not connections or self.spec.limits.rate_limit_key != "src":
            return []
        return [
            f"    # At most {connections} concurrent connections per client address: requests on more get",
            "    # a 429 below; connections far beyond (which may never send a request) are closed at once.",
            "    stick-table type ip size 100k expire 2m store conn_cur",
            "    tcp-request connection track-sc0 src",
            f"    tcp-request connection reject if {{ sc_conn_cur(0) gt {2 * connections} }}",
        ]

    def _connection_cap_rules(self) -> list[str]:
        """Requests on a client's connections beyond its cap: 429 before any costly rule (password, body)."""
        spec = self.spec
        connections = spec.max_client_connections
        lines = []
        if connections and spec.limits.rate_limit_key != "src":
            lines += [
                f"    # At most {connections} concurrent requests per client (behind a trusted proxy, whose",
                "    # connections are shared by many clients).",
                "    stick-table type ip size 100k expire 2m store conn_cur",
                "    http-request track-sc0 var(txn.client)",
            ]
        if connections:
            lines += [
                *_answer(429, "too_many_connections",
                         f"At most {connections} concurrent connections per client; close some and retry.",
                         f"{{ sc_conn_cur(0) gt {connections} }}", "Too many connections",
                         headers="hdr Retry-After 5"),
            ]
        else:
            lines.append("    # Per-client connection cap: off (limits.max_client_connections).")
        return lines

    def _rate_rules(self) -> list[str]:
        rate = self.spec.rate_limit_per_minute
        lines = []
        if rate:
            detail = f"At most {rate} generations a minute per client; retry later."
            lines += [
                f"    # At most {rate} generations a minute per client (table: backend {RATES_TABLE}); read here,",
                "    # counted only once a job passed every rule (a refused request never counts).",
                *_answer(429, "rate_limited", detail,
                         f"is_job {{ var(txn.client),table_http_req_rate({RATES_TABLE}) ge {rate} }}",
                         "Too many requests", headers="hdr Retry-After 60"),
            ]
        else:
            lines.append("    # Per-client generation rate limit: off (limits.rate_limit_per_minute; on when exposed).")
        return lines

    def _body_rules(self) -> list[str]:
        limits = self.spec.limits
        whole, rest, bodies = limits.max_body_bytes, limits.rest_body_bytes, limits.max_client_bodies
        rest_detail = f"A REST job body may be at most {rest} bytes; send larger photos through the Gradio API."
        lines = [
            "    # Body sizes: declared (Content-Length) for every route; counted for REST jobs, whose",
            "    # whole body must fit in the buffer (chunked bodies included). Larger streamed bodies",
            "    # (Gradio uploads) are counted by the web front.",
            *_answer(413, "request_too_large", f"The request body is larger than {whole} bytes.",
                     f"{{ req.hdr_val(content-length) gt {whole} }}", "Request too large"),
            *_answer(413, "request_too_large", rest_detail, f"is_rest {{ req.hdr_val(content-length) gt {rest} }}",
                     "Request too large"),
            "    acl has_body req.hdr_val(content-length) gt 0",
            "    acl has_body req.hdr(transfer-encoding) -m found",
        ]
        if bodies:
            lines += [
                f"    # At most {bodies} requests with a body in flight per client (table: backend {BODIES_TABLE}):",
                "    # each holds up to tune.bufsize of memory while it arrives.",
                f"    http-request track-sc6 var(txn.client) table {BODIES_TABLE} if has_body",
                *_answer(429, "too_many_bodies",
                         f"At most {bodies} requests with a body at once per client; wait for one to finish.",
                         f"has_body {{ sc_conn_cur(6) gt {bodies} }}", "Too many uploads", headers="hdr Retry-After 5"),
            ]
        return lines + [
            "    # Then the whole body (up to tune.bufsize) is received before any later rule: to read the",
            "    # Gradio event and session from a queue/join body, to count a REST body, and to replay.",
            f"    http-request wait-for-body time {duration(limits.request_timeout)} if has_body",
            *_answer(413, "request_too_large", rest_detail, f"is_rest {{ req.body_len gt {rest} }}",
                     "Request too large"),
        ]

    def _job_count_rules(self) -> list[str]:
        if not self.spec.rate_limit_per_minute:
            return []
        return [
            "    # This job passed every rule: it counts against its client's rate.",
            f"    http-request track-sc1 var(txn.client) table {RATES_TABLE} if is_job",
        ]

    @staticmethod
    def _cross_site_rules() -> list[str]:
        detail = "Cross-site requests may not start jobs or upload files; use the page of this site or an API client."
        return [
            "    # Cross-site request forgery: another site's page must not make its visitors' browsers",
            "    # run jobs or upload files. Browsers say where a request comes from (Sec-Fetch-Site, Origin);",
            "    # API clients such as curl and httpx send neither and pass.",
            "    acl cross_site req.hdr(sec-fetch-site) -m str cross-site same-site",
            "    acl has_origin req.hdr(origin) -m found",
            "    acl same_origin req.hdr(origin),lower,regsub(^[a-z]+://,),strcmp(txn.host) eq 0",
            *_answer(403, "cross_site_request", detail, "is_guarded cross_site", "Cross-site request refused"),
            *_answer(403, "cross_site_request", detail, "is_guarded has_origin !same_origin",
                     "Cross-site request refused"),
        ]

    @staticmethod
    def _availability_rules() -> list[str]:
        return [
            "    # Nothing to serve: say so at once (HAProxy knows how many servers are up).",
            *_answer(503, "unavailable", "The studio is starting or restarting; this page reloads by itself.",
                     f"!is_rest {{ nbsrv({WEBS_BACKEND}) eq 0 }}", "Starting up",
                     headers="hdr Retry-After 5", refresh=3),
            *_answer(503, "unavailable", "No worker is up right now (starting or restarting); retry shortly.",
                     f"is_rest {{ nbsrv({WORKERS_BACKEND}) eq 0 }}", "No worker is up",
                     headers="hdr Retry-After 5"),
        ]

    @staticmethod
    def _affinity_rules() -> list[str]:
        return [
            "    # Affinity key for the webs backend, used only when the cookie cannot decide",
            "    # (no cookie, or it names a server that is down):",
            "    #  1. the stale cookie's value: a reused gradio_client keeps the dead node's cookie",
            "    #     and ignores new ones, so all its requests (join, data stream, uploads, file",
            "    #     downloads) hash to one and the same live node;",
            "    #  2. the Gradio session_hash (data stream URL, heartbeat path, queue/join body), for",
            "    #     clients that keep no cookie: their join and data stream meet on one node;",
            "    #  3. nothing: a new client is spread over the live nodes.",
            f"    http-request set-var(txn.affinity) req.cook({COOKIE_NAME})",
            "    http-request set-var(txn.affinity) url_param(session_hash) if !{ var(txn.affinity) -m found }",
            "    http-request set-var(txn.affinity) var(txn.path),field(4,/) if !{ var(txn.affinity) -m found }"
            " { var(txn.path) -m beg /gradio_api/heartbeat/ }",
            "    http-request set-var(txn.affinity) req.body,json_query('$.session_hash')"
            " if !{ var(txn.affinity) -m found } is_join",
        ]

    def _worker_queue(self) -> str:
        listener, tls = self.spec.worker_queue, self.spec.tls
        bind = [f"    bind {listener.host}:{listener.port}"]
        if tls is not None and self.spec.worker_queue_tls:
            bind = [
                "    # Over TLS for web fronts on other hosts: they check this balancer's certificate",
                "    # against the cluster CA (--worker-queue-ca). Only web fronts get in: a client",
                "    # certificate signed by the queue CA is required (--worker-queue-cert), since this",
                "    # entry goes around the public site's login and rate limits straight to the GPUs.",
                "    # Only the queue CA is trusted here, and no node trusts it: a balancer's or node's",
                "    # cluster certificate does not open the queue, a queue certificate opens no node.",
                f"    bind {listener.host}:{listener.port} ssl crt {config_path_arg(tls.cert_file)}"
                f" ca-file {config_path_arg(self.spec.queue_ca())} verify required",
            ]
        if tls is not None and self.spec.worker_queue_tls:
            members = ["    # Web fronts prove they belong to the cluster with their queue certificate (above)."]
        else:
            refused = _json_body(*NOT_A_PART)
            members = _with_secret(
                "    # Only parts of this cluster run jobs here: web fronts send the cluster secret.",
                f"    acl cluster_part req.hdr({SECRET_HEADER}),secure_memcmp(proc.cluster_secret)",
                f"    http-request return status 403 content-type application/json string {refused}"
                " if !probe !cluster_part",
            )
        return _block(
            "# Private entry for the web fronts' jobs (their --worker-queue). Probes go around the",
            "# job queue, so a web front's readiness check never waits behind generations.",
            "frontend worker_queue",
            *bind,
            "    option http-buffer-request",
            f"    acl probe path {READY_PATH} {HEALTH_PATH} {INFO_PATH}",
            *members,
            f"    use_backend {PROBES_BACKEND} if probe",
            f"    default_backend {WORKERS_BACKEND}",
        )

    def _webs_backend(self) -> str:
        limits = self.spec.limits
        lines = [
            "# Gradio web fronts with sticky sessions. A browser keeps its node through the cookie;",
            "# when that node is down the request is redispatched by the affinity key (see the",
            "# public frontend) so one client's requests keep meeting on one live node.",
            f"backend {WEBS_BACKEND}",
            "    balance hash var(txn.affinity)",
            "    hash-type consistent",
            *self.servers.cookie_lines(),
            "    option redispatch",
            f"    retries {limits.retries}",
            "    retry-on conn-failure empty-response",
            "    http-reuse never  # see the workers backend",
            "    option httpchk",
            "    http-check send meth GET uri /readyz",
            "    http-check expect status 200",
            "    http-error status 503 content-type application/json hdr Retry-After 5 string "
            + _json_body("unavailable", "No web front is up right now (starting or restarting); retry shortly."),
            *_secret_header(),
        ]
        lines += self.servers.web_lines()
        return _block(*lines)

    def _workers_backend(self) -> str:
        limits = self.spec.limits
        detail = (
            f"No worker could take this job within {limits.queue_timeout:g} s: "
            "all are busy or down. Retry later."
        )
        lines = [
            "# GPU workers: the least-loaded one takes the job, one job per worker at a time",
            "# (maxconn 1); the rest wait in HAProxy's queue, a cluster-wide FIFO bounded by",
            "# timeout queue, then get a JSON 503. A job whose worker dies before answering is",
            "# replayed on another worker (L7 retries, redispatch on every retry).",
            f"backend {WORKERS_BACKEND}",
            "    balance leastconn",
            "    option redispatch 1",
            f"    retries {limits.retries}",
            "    retry-on conn-failure empty-response response-timeout " + " ".join(map(str, RETRYABLE_STATUSES)),
            "    # A fresh connection per job (cheap next to a generation): after a worker dies, no",
            "    # retry lands on one of its dead idle connections, which fail at once and would use",
            "    # up the retries before the health state has caught up.",
            "    http-reuse never",
            f"    timeout queue {duration(limits.queue_timeout)}",
            f"    timeout server {duration(limits.generation_timeout)}",
            "    option httpchk",
            "    http-check send meth GET uri /readyz",
            "    http-check expect status 200",
            "    http-error status 503 content-type application/json hdr Retry-After 10 string "
            + _json_body("busy", detail),
            *_secret_header(),
        ]
        if any(node.worker.dispatch_agent_port for node in self.spec.workers):  # type: ignore[union-attr]
            lines += [
                "    # A worker's dispatch agent (agent-check) raises its maxconn to 2 while it PNG-encodes a",
                "    # result with its GPU idle, so the next job in this queue starts at once, and sets it",
                "    # back to 1 before that result's response frees the slot (webui/worker/dispatch_agent.py).",
                "    # It also answers down while the worker is not ready (exiting after an OOM, stalled):",
                "    # out at its first answer, where the health check needs fall failures, during which its",
                "    # 503s would be retried onto it (the least loaded) until the retries ran out.",
            ]
        if any(node.node_host for node in self.spec.workers):
            lines += [
                "    # Workers on node hosts have no dispatch agent: a server has one agent check, and theirs",
                "    # asks the node host's host agent for the state. They take one job at a time.",
            ]
        lines += self.servers.worker_lines()
        return _block(*lines)

    def _probes_backend(self) -> str:
        lines = [
            "# Worker probes (/readyz, /healthz) from the web fronts: any worker that is UP in",
            "# the workers backend answers (a worker answers probes while it generates), so a",
            "# web front learns which model the workers run without queueing behind jobs.",
            f"backend {PROBES_BACKEND}",
            "    balance roundrobin",
            "    http-error status 503 content-type application/json hdr Retry-After 5 string "
            + _json_body("not_ready", "No worker is up."),
            *_secret_header(),
        ]
        lines += self.servers.probe_lines()
        return _block(*lines)

    def _rates_table(self) -> str:
        if not self.spec.rate_limit_per_minute:
            return ""
        return _block(
            "# Generations each client started in the last minute (the public frontend tracks them).",
            f"backend {RATES_TABLE}",
            "    stick-table type ip size 100k expire 2m store http_req_rate(1m)",
        )

    def _bodies_table(self) -> str:
        if not self.spec.limits.max_client_bodies:
            return ""
        return _block(
            "# Requests with a body in flight per client (the public frontend tracks them).",
            f"backend {BODIES_TABLE}",
            "    stick-table type ip size 100k expire 2m store conn_cur",
        )

    @staticmethod
    def _sticky_table() -> str:
        return _block(
            "# UI requests in flight (conn_cur) and so far (http_req_cnt) per persistence cookie value",
            "# (the public frontend tracks them).",
            f"backend {STICKY_TABLE}",
            "    stick-table type string len 64 size 100k expire 30m store conn_cur,http_req_cnt",
        )

    def _stats_frontend(self) -> str:
        stats = self.spec.stats
        return _block(
            "# Stats page (/) and Prometheus exporter (/metrics), password-protected.",
            "frontend stats",
            f"    bind {stats.host}:{stats.port}",
            "    no log",
            '    http-request auth realm "portrait-ha stats" unless { http_auth(stats_users) }',
            "    http-request use-service prometheus-exporter if { path /metrics }",
            "    stats enable",
            "    stats uri /",
            "    stats refresh 5s",
            "    stats show-legends",
        )


def _with_secret(*lines: str) -> list[str]:
    """``lines`` only when HAProxy runs with the cluster secret in its environment (``launch.py``)."""
    return [f".if defined({SECRET_ENV})", *lines, ".endif"]


def _secret_header() -> list[str]:
    """A backend's rule showing the cluster secret to its servers (a client's own header is replaced)."""
    return _with_secret(
        "    # Node parts serve parts of this cluster only (webui/cluster_secret.py).",
        f'    http-request set-header {SECRET_HEADER} "${{{SECRET_ENV}}}"',
    )


def _block(*lines: str) -> str:
    return "\n".join(lines) + "\n"


def render_config(spec: ClusterSpec) -> str:
    """The text of ``haproxy.cfg`` for ``spec``."""
    return HAProxyConfigRenderer(spec).render()
