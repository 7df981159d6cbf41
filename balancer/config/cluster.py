"""The cluster description: nodes, node hosts, balancers, and ``ClusterSpec`` over them all.

One ``ClusterSpec`` drives everything: ``balancer.haproxy.config`` renders HAProxy's configuration from it, the
sidecar supervises its *managed* nodes, and ``launch.py`` builds one from its flags (plus an optional YAML file,
see ``assets/cluster.example.yaml``). Its simple sections (listeners, limits, health, sidecar, tls, jobs) are in
``balancer.config.sections``; reading and validating a file in ``balancer.config.loading``.

Nodes may run on *node hosts* (``node_hosts``; ``assets/cluster.hosts.example.yaml``): machines whose own sidecar
(``launch.py --role node``) supervises them and tells every balancer their states through HAProxy's agent checks
(``balancer.multihost.host_agent``).

Safe by default: the public frontend, the stats page, the runtime API and the sidecar listen on 127.0.0.1 only;
the stats page always needs a password (a random one unless you set one); rate limiting and HTTP basic auth are
off until configured.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import tempfile
from pathlib import Path

from pydantic import Field, model_validator

from balancer.config.host import host_header_values, is_loopback, named, the_one_here
from balancer.config.sections import (
    EXPOSED_CLIENT_CONNECTIONS,
    EXPOSED_RATE_LIMIT_PER_MINUTE,
    LOOPBACK,
    LOOPBACK_CONNECTION_SHARE,
    NAME_PATTERN,
    QUEUE_CA_CERT,
    QUEUE_SUFFIX,
    WILDCARD_HOSTS,
    ClusterConfigError,
    HealthSpec,
    JobsSpec,
    LimitsSpec,
    Listener,
    SidecarSpec,
    StatsSpec,
    TLSSpec,
)
from balancer.config.sections import StrictModel as _Model


class NodeHostSpec(_Model):
    """A machine that runs node parts under its own sidecar (``launch.py --role node``), without HAProxy.

    Its sidecar's *host agent* answers HAProxy's agent checks on ``address:host_agent_port`` with
    each part's state (``balancer.multihost.host_agent``), so that every balancer learns within
    ``health.host_agent_interval`` that a part is starting, draining, restarting or dead.
    """

    name: str = Field(pattern=NAME_PATTERN, description="What nodes name in their node_host.")
    address: str = Field(description="This host's address as the balancers reach it: its parts and its agent.")
    host_agent_port: int = Field(
        8406, ge=1, le=65535, description="TCP port of its sidecar's host agent (HAProxy agent-check)."
    )
    cert_file: Path | None = Field(
        None, description="With tls: this host's certificate and key (python -m balancer.multihost.certs --node "
        "NAME), on this host; its workers and web fronts serve with it. Default: NAME.pem beside tls.ca_file.",
    )
    queue_cert_file: Path | None = Field(
        None, description="With tls and a TLS worker queue: the client certificate and key this host's web fronts "
        "present to it (python -m balancer.multihost.certs --node NAME), on this host. Default: NAME-queue.pem beside "
        "tls.ca_file.",
    )


class BalancerHostSpec(_Model):
    """A balancer host (``launch.py --role balancer``) of a pair sharing the floating address."""

    name: str = Field(pattern=NAME_PATTERN, description="This balancer's name (launch.py --balancer NAME).")
    address: str = Field(description="Its own address on the floating address's network: VRRP goes between these.")
    priority: int = Field(
        100, ge=1, le=254, description="VRRP priority: the highest healthy balancer takes the address first."
    )


class FloatingAddressSpec(_Model):
    """The address clients use, held by one balancer at a time (keepalived, VRRP; ``balancer.multihost.keepalived``)."""

    address: str = Field(description="The floating IPv4 address (public.host and worker_queue.host name it too).")
    prefix: int = Field(24, ge=1, le=32, description="Its network prefix length.")
    interface: str = Field("eth0", description="The balancers' network interface it is added to.")
    router_id: int = Field(51, ge=1, le=255, description="VRRP router id: unique among the VRRP groups of the network.")
    advert_interval: float = Field(
        0.5, ge=0.1, le=25.5, description="Seconds between the holder's VRRP adverts; a dead holder's address moves "
        "after about 3 of them (VRRPv3 allows fractions; python -m bench.pair: 1.6 s with 0.5, 3.1 s with 1)."
    )
    check_interval: int = Field(
        1, ge=1, le=60, description="Seconds between checks that this host's HAProxy answers (whole seconds)."
    )
    check_fall: int = Field(2, ge=1, description="Failed HAProxy checks before a balancer gives the address up.")
    check_rise: int = Field(2, ge=1, description="Passed HAProxy checks before it may hold the address again.")

    @model_validator(mode="after")
    def _check_address(self) -> FloatingAddressSpec:
        try:
            ipaddress.IPv4Address(self.address)
        except ValueError:
            raise ValueError(f"floating.address: {self.address!r} is not an IPv4 address") from None
        return self


class PartSpec(_Model):
    """One process of a node: its web front or its worker."""

    host: str = Field(LOOPBACK, description="Address the process listens on (and HAProxy connects to).")
    port: int = Field(ge=1, le=65535)
    args: list[str] = Field(default_factory=list, description="Extra command-line flags (managed nodes).")
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment variables (managed nodes).")
    command: list[str] | None = Field(
        None, description="Run this instead of the standard webui command (managed nodes; rarely needed; not on a "
        "node host with tls, whose parts need the TLS flags the sidecar gives them)."
    )
    dispatch_agent_port: int | None = Field(
        None, ge=1, le=65535,
        description="A worker's dispatch agent (HAProxy agent-check; webui/worker/dispatch_agent.py): HAProxy "
        "sends the next job while a result is PNG-encoded. Unset: one job at a time, encoding included "
        "(a remote worker needs the same --dispatch-agent-port). On a node host the worker's agent listens on "
        "loopback and the host agent, which holds the server's one agent check, passes HAProxy its answer.",
    )
    gpu: int | None = Field(
        None, ge=0, description="The GPU of a managed worker (NVML / nvidia-smi index): the sidecar gives it "
        "CUDA_VISIBLE_DEVICES=GPU and CUDA_DEVICE_ORDER=PCI_BUS_ID unless env sets them. Unset: every GPU "
        "it can see (workers only)."
    )
    standby: bool = Field(
        False, description="Keep a warm standby of this managed worker (workers only): a second process with "
        "the model in host memory (its RSS: the weights' size plus about 0.5 GB of imports), promoted in "
        "seconds when the worker dies (balancer/supervision/standby.py)."
    )

    @property
    def address(self) -> str:
        """``host:port`` as HAProxy's server line wants it."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """Base URL of the process."""
        return f"http://{self.host}:{self.port}"


class NodeSpec(_Model):
    """A node: a web front and/or a worker, supervised by a sidecar (managed: here, or on its node host's)
    or by something else on another host (not managed)."""

    name: str = Field(pattern=NAME_PATTERN, description="Server name in HAProxy and cookie value.")
    managed: bool = Field(
        True, description="Start and supervise its processes: here, or on its node_host (launch.py --role node)."
    )
    node_host: str | None = Field(
        None, description="The node host (in node_hosts) that runs it; unset: the balancer's own host. Its parts "
        "listen on that host's address unless their host is set."
    )
    web: PartSpec | None = Field(None, description="The Gradio web front.")
    worker: PartSpec | None = Field(None, description="The GPU worker.")
    cert_name: str | None = Field(
        None, pattern=NAME_PATTERN,
        description="With tls: the name in this node host's certificate (python -m balancer.multihost.certs --node "
        "NAME); HAProxy refuses a certificate that names another host. Default: its node_host, else the node's name.",
    )

    def tls_name(self) -> str:
        """The name HAProxy (and a node host's sidecar) expects in this node's certificate."""
        return self.cert_name or self.node_host or self.name

    @property
    def remote(self) -> bool:
        """Whether it runs on another host than the balancer: not managed here, or on a node host."""
        return not self.managed or self.node_host is not None

    @model_validator(mode="after")
    def _check_parts(self) -> NodeSpec:
        if self.web is None and self.worker is None:
            raise ValueError(f"node {self.name}: needs a web front, a worker, or both")
        if self.web is not None and self.web.gpu is not None:
            raise ValueError(f"node {self.name}: gpu is a worker setting; a web front needs no GPU")
        if self.web is not None and self.web.dispatch_agent_port is not None:
            raise ValueError(f"node {self.name}: dispatch_agent_port is a worker setting")
        if self.web is not None and self.web.standby:
            raise ValueError(f"node {self.name}: standby is a worker setting; a web front has none")
        return self


class ClusterSpec(_Model):
    """Everything HAProxy and the sidecar need to know about the cluster."""

    public: Listener = Field(
        default_factory=lambda: Listener(port=8080),
        description="Browsers, gradio_client and REST /generate (127.0.0.1 by default; 0.0.0.0 to expose).",
    )
    worker_queue: Listener = Field(
        default_factory=lambda: Listener(port=8081),
        description="Where web fronts send their jobs (the workers' shared queue); keep it private.",
    )
    stats: StatsSpec = Field(default_factory=StatsSpec)
    sidecar: SidecarSpec = Field(default_factory=SidecarSpec)
    limits: LimitsSpec = Field(default_factory=LimitsSpec)
    health: HealthSpec = Field(default_factory=HealthSpec)
    jobs: JobsSpec = Field(default_factory=JobsSpec)
    users_file: Path | None = Field(
        None,
        description="Enable HTTP basic auth for the whole site: one 'user:crypt-hash' a line "
        "(e.g. from 'openssl passwd -6').",
    )
    shared: bool = Field(False, description="A public share link tunnels to the public listener (launch.py "
                         "--share): the site is exposed, whatever the listener's address.")
    security_headers: bool = Field(True, description="Add X-Content-Type-Options, X-Frame-Options, Referrer-Policy.")
    public_hosts: list[str] = Field(
        default_factory=list,
        description="Host names the public site answers to (e.g. studio.example.com), besides this machine's "
        "own addresses; any other Host header gets 421. A leading dot allows subdomains (.example.com).",
    )
    tls: TLSSpec | None = Field(
        None,
        description="Mutual TLS to nodes on other hosts (managed: false, or on node hosts); unset: plain HTTP "
        "(keep such nodes on a private network then).",
    )
    cluster_secret_file: Path | None = Field(
        None,
        description="A file (mode 600, first line) with the secret every part of the cluster shows to workers and "
        "the worker queue, the same on every host (e.g. from 'openssl rand -hex 32'); unset: launch.py makes a "
        "new one in the run directory. Needed when web fronts on node hosts send jobs over plain HTTP.",
    )
    run_dir: Path = Field(
        default_factory=lambda: Path(tempfile.gettempdir()) / f"portrait-ha-{os.getuid()}-{socket.gethostname()}",
        description="Where haproxy.cfg, the runtime API socket, logs and Gradio temp dirs go: a directory of "
        "this user's with mode 0700 (created so; anything else is refused, see balancer/system/run_dir.py). The "
        "default names the host too: hosts that share a temp dir do not share a run directory.",
    )
    node_hosts: list[NodeHostSpec] = Field(
        default_factory=list, description="Machines that run nodes under their own sidecar, without HAProxy."
    )
    nodes: list[NodeSpec] = Field(default_factory=list)
    balancers: list[BalancerHostSpec] = Field(
        default_factory=list, description="Balancer hosts sharing the floating address (with floating)."
    )
    floating: FloatingAddressSpec | None = Field(
        None, description="The address clients use, moved between the balancers by keepalived; unset: one balancer."
    )

    @model_validator(mode="after")
    def _check_cluster(self) -> ClusterSpec:
        names = [node.name for node in self.nodes]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"nodes: duplicate names {duplicates}")
        listeners = {"public": self.public, "worker_queue": self.worker_queue, "stats": self.stats,
                     "sidecar": self.sidecar, **({"jobs": self.jobs} if self.jobs.enabled else {})}
        seen: dict[int, str] = {}
        for label, listener in listeners.items():
            _claim_port(seen, listener.port, f"{label}.port", label)
        hosts = self._check_node_hosts()
        self._check_balancers()
        for index, host in enumerate(self.node_hosts):
            _claim_port(hosts[host.name], host.host_agent_port, f"node_hosts.{index}.host_agent_port",
                        f"node_hosts.{index}.host_agent_port")
        for node in self.nodes:
            if not node.managed:
                continue
            for kind, part in (("web", node.web), ("worker", node.worker)):
                if part is None:
                    continue
                ports = hosts[node.node_host] if node.node_host else seen
                label = f"nodes.{node.name}.{kind}"
                _claim_port(ports, part.port, f"{label}.port", label)
                if part.dispatch_agent_port is not None:
                    _claim_port(ports, part.dispatch_agent_port, f"{label}.dispatch_agent_port",
                                f"{label}.dispatch_agent_port")
        if self.users_file is not None and not self.users_file.is_file():
            raise ValueError(f"users_file: {self.users_file} is not a file")
        if self.jobs.sign_in and not (self.jobs.enabled and self.jobs.web_fronts):
            raise ValueError("jobs.sign_in: the password is checked by the jobs service: needs jobs.enabled and "
                             "jobs.web_fronts")
        if self.jobs.sign_in and self.needs_shared_secret and self.cluster_secret_file is None:
            raise ValueError("jobs.sign_in: web fronts on node hosts sign cookies with the cluster secret: set "
                             "cluster_secret_file (the same file on every host)")
        return self

    def _check_node_hosts(self) -> dict[str, dict[int, str]]:
        """Check the node hosts and the nodes naming them; give those nodes' parts their host's address.

        Returns each node host's (so far empty) record of claimed ports."""
        names = [host.name for host in self.node_hosts]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"node_hosts: duplicate names {duplicates}")
        addresses = {host.name: host.address for host in self.node_hosts}
        queue_host = self.worker_queue.host
        remote_webs = [addresses.get(node.node_host, "") for node in self.nodes if node.node_host and node.web]
        if remote_webs and (queue_host in WILDCARD_HOSTS or (
                is_loopback(queue_host) and not all(map(is_loopback, remote_webs)))):
            raise ValueError("worker_queue.host: web fronts on node hosts send their jobs to it, so it must be the "
                             f"balancer's address as they reach it (not {queue_host or 'empty'})")
        for node in self.nodes:
            if node.node_host is None:
                continue
            if node.node_host not in addresses:
                raise ValueError(f"nodes.{node.name}.node_host: {node.node_host!r} is not in node_hosts {names}")
            for kind, part in (("web", node.web), ("worker", node.worker)):
                if part is not None and "host" not in part.model_fields_set:
                    part.host = addresses[node.node_host]
                if part is not None and part.command and self.tls is not None:
                    raise ValueError(f"nodes.{node.name}.{kind}.command: with tls, a node host's sidecar starts its "
                                     "parts with the flags that make them serve mutual TLS, and a command of your own "
                                     "gets none (HAProxy could not reach the part): give extra flags in args instead")
        return {name: {} for name in names}

    def _check_balancers(self) -> None:
        """Balancers come with a floating address, at least two, with distinct names and addresses."""
        if self.floating is None:
            if self.balancers:
                raise ValueError("balancers: they share a floating address; set floating.address")
            return
        if len(self.balancers) < 2:
            raise ValueError("balancers: a floating address needs two or more balancers (name, address)")
        for label, values in (("names", [b.name for b in self.balancers]),
                              ("addresses", [b.address for b in self.balancers])):
            duplicates = sorted({value for value in values if values.count(value) > 1})
            if duplicates:
                raise ValueError(f"balancers: duplicate {label} {duplicates}")
        if self.floating.address in {b.address for b in self.balancers}:
            raise ValueError("floating.address: must differ from every balancer's own address")

    def balancer(self, name: str | None) -> BalancerHostSpec:
        """The balancer called ``name``, or (None) the one whose address is this machine's
        (``ClusterConfigError`` saying which exist or matched)."""
        if name is None:
            return the_one_here(self.balancers, "balancer", "--balancer")
        return named(self.balancers, name, "balancer", "balancers")

    def node_host(self, name: str) -> NodeHostSpec:
        """The node host called ``name`` (``ClusterConfigError`` naming the known ones if none)."""
        return named(self.node_hosts, name, "node host", "node_hosts")

    def this_node_host(self) -> NodeHostSpec:
        """The node host whose address is one of this machine's (``ClusterConfigError`` unless exactly one)."""
        return the_one_here(self.node_hosts, "node host", "--node-host")

    def nodes_on(self, node_host: str | None) -> list[NodeSpec]:
        """The managed nodes that ``node_host``'s sidecar runs (None: the balancer host's own)."""
        return [node for node in self.nodes if node.managed and node.node_host == node_host]

    def uses_tls(self, node: NodeSpec) -> bool:
        """Whether HAProxy reaches ``node`` over mutual TLS: with ``tls``, every node on another host."""
        return self.tls is not None and node.remote

    def part_url(self, node: NodeSpec, part: PartSpec) -> str:
        """A part's base URL: https when it serves mutual TLS (``uses_tls``)."""
        return ("https" + part.url.removeprefix("http")) if self.uses_tls(node) else part.url

    def node_host_cert(self, host: NodeHostSpec) -> Path:
        """With ``tls``: a node host's certificate and key (its ``cert_file``, default NAME.pem beside ca.crt)."""
        assert self.tls is not None
        return host.cert_file or self.tls.ca_file.parent / f"{host.name}.pem"

    def queue_ca(self) -> Path:
        """With ``tls``: the queue CA's certificate (``tls.queue_ca_file``, default queue-ca.crt beside ca.crt)."""
        assert self.tls is not None
        return self.tls.queue_ca_file or self.tls.ca_file.parent / QUEUE_CA_CERT

    def queue_client_cert(self, node_host: NodeHostSpec | None) -> Path:
        """With ``tls``: what the web fronts of a node host (None: the balancer's host) present to the worker
        queue (its ``queue_cert_file``, default NAME-queue.pem beside ca.crt, or beside the balancer's cert)."""
        assert self.tls is not None
        if node_host is not None:
            return node_host.queue_cert_file or self.tls.ca_file.parent / f"{node_host.name}{QUEUE_SUFFIX}.pem"
        cert = self.tls.cert_file
        return self.tls.queue_cert_file or cert.with_name(f"{cert.stem}{QUEUE_SUFFIX}.pem")

    def check_own_certificate(self, node_host: NodeHostSpec | None) -> None:
        """With ``tls``: that this host's files are here (a node host's, else the balancer's): its certificate,
        with a TLS worker queue the queue CA (balancer) and the queue certificate of its web fronts and jobs service;
        ``ClusterConfigError`` naming the setting if not."""
        if self.tls is None:
            return
        if node_host is None:
            files = [(self.tls.cert_file, "tls.cert_file")]
            if self.worker_queue_tls:
                files.append((self.queue_ca(), _label("tls.queue_ca_file", self.tls.queue_ca_file)))
            owner, prefix = self.tls, "tls"
        else:
            files = [(self.node_host_cert(node_host),
                      _label(f"node_hosts.{node_host.name}.cert_file", node_host.cert_file))]
            owner, prefix = node_host, f"node_hosts.{node_host.name}"
        host_name = None if node_host is None else node_host.name
        queue_clients = any(node.web for node in self.nodes_on(host_name)) or (node_host is None and self.jobs.enabled)
        if self.worker_queue_tls and queue_clients:  # its web fronts, and a balancer's jobs service
            files.append((self.queue_client_cert(node_host),
                          _label(f"{prefix}.queue_cert_file", owner.queue_cert_file)))
        for path, label in files:
            if not path.is_file():
                raise ClusterConfigError(f"{label}: {path} is not a file (python -m balancer.multihost.certs makes it)")

    @property
    def worker_queue_tls(self) -> bool:
        """Whether the worker queue is served over TLS (``tls.worker_queue``, else when not on loopback)."""
        if self.tls is None:
            return False
        if self.tls.worker_queue is not None:
            return self.tls.worker_queue
        return not is_loopback(self.worker_queue.host)

    @property
    def worker_queue_url(self) -> str:
        """The worker queue's URL for web fronts on this host (https when served over TLS)."""
        url = self.worker_queue.url
        return "https" + url.removeprefix("http") if self.worker_queue_tls else url

    def web_flags(self, worker_queue_url: str | None = None, node_host: NodeHostSpec | None = None) -> list[str]:
        """Flags every web front of this cluster gets: where its jobs go (default: the worker queue, which passes
        ``/v1/jobs`` on to the jobs service when the cluster runs one, and the page's sign-in with it), how it
        checks an https one and which queue certificate it presents there (its host's: ``node_host``, None for the
        balancer's), and the balancer's body limits."""
        queue = worker_queue_url or self.worker_queue_url
        flags = ["--worker-queue", queue]
        if self.tls is not None and self.worker_queue_tls and worker_queue_url is None:
            flags += ["--worker-queue-ca", str(self.tls.ca_file),
                      "--worker-queue-cert", str(self.queue_client_cert(node_host))]
        if self.jobs.enabled and self.jobs.web_fronts:
            flags += ["--jobs-url", queue]  # the worker queue passes /v1/jobs to the jobs service
            flags += ["--sign-in"] if self.jobs.sign_in else []
        limits = self.limits
        return [*flags, "--max-body-bytes", str(limits.max_body_bytes), "--body-timeout", str(limits.body_timeout)]

    @property
    def rest_via_jobs(self) -> bool:
        """Whether REST generations go through the jobs service (``jobs.rest``), which records each."""
        return self.jobs.enabled and self.jobs.rest

    @property
    def needs_shared_secret(self) -> bool:
        """Whether web fronts on other hosts must show the cluster secret at the worker queue (plain HTTP)."""
        return not self.worker_queue_tls and any(node.web is not None and node.node_host for node in self.nodes)

    @property
    def exposed(self) -> bool:
        """Whether other machines reach the public site: a listener off loopback, or a share link to it."""
        return self.shared or not is_loopback(self.public.host)

    @property
    def rate_limit_per_minute(self) -> int:
        """Generations per client a minute, 0 for no limit (the exposed default when unset)."""
        value = self.limits.rate_limit_per_minute
        return value if value is not None else (EXPOSED_RATE_LIMIT_PER_MINUTE if self.exposed else 0)

    @property
    def max_client_connections(self) -> int:
        """Concurrent connections per client, 0 for no limit (when unset: the exposed default, else a share of
        ``max_connections``, so that one client never holds them all)."""
        if self.limits.max_client_connections is not None:
            return self.limits.max_client_connections
        if self.exposed:
            return EXPOSED_CLIENT_CONNECTIONS
        return max(1, self.limits.max_connections // LOOPBACK_CONNECTION_SHARE)

    def allowed_hosts(self, local_hosts: bool = True) -> list[str]:
        """Host header values the public frontend accepts (``host_header_values``)."""
        return host_header_values(self.public_hosts, self.public.host, self.public.port, local_hosts)

    @property
    def webs(self) -> list[NodeSpec]:
        """Nodes with a web front."""
        return [node for node in self.nodes if node.web is not None]

    @property
    def workers(self) -> list[NodeSpec]:
        """Nodes with a worker."""
        return [node for node in self.nodes if node.worker is not None]

    @property
    def socket_path(self) -> Path:
        """HAProxy's runtime API socket (admin level; only this user can open it)."""
        return self.run_dir / "haproxy.sock"

    @property
    def config_path(self) -> Path:
        """Where the rendered haproxy.cfg is written."""
        return self.run_dir / "haproxy.cfg"


def _label(setting: str, value: Path | None) -> str:
    """A file setting's name for an error, marked ``(default)`` when it was not given."""
    return setting if value is not None else f"{setting} (default)"


def _claim_port(seen: dict[int, str], port: int, field: str, owner: str) -> None:
    """Record that ``owner`` listens on ``port`` (set by ``field``); ValueError when another one already does."""
    if port in seen:
        raise ValueError(f"{field}: {port} is already used by {seen[port]}")
    seen[port] = owner
