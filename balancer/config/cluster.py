"""``ClusterSpec``: a cluster's fields (``balancer.config.cluster_fields``) and what is derived from them.

One ``ClusterSpec`` drives everything: ``balancer.haproxy.config`` renders HAProxy's configuration from it, the
sidecar supervises its *managed* nodes, and ``launch.py`` builds one from its flags (plus an optional YAML file,
see ``assets/cluster.example.yaml``; reading and validating a file: ``balancer.config.loading``). Here: finding
nodes and hosts, the TLS files and URLs of its parts, the web fronts' flags, limits that depend on exposure, and
the run directory's paths.

Nodes may run on *node hosts* (``node_hosts``; ``assets/cluster.hosts.example.yaml``): machines whose own sidecar
(``launch.py --role node``) supervises them and tells every balancer their states through HAProxy's agent checks
(``balancer.multihost.host_agent``).
"""

from __future__ import annotations

from pathlib import Path

from balancer.config.access import QUEUE_CA_CERT, QUEUE_SUFFIX
from balancer.config.basics import ClusterConfigError
from balancer.config.cluster_fields import ClusterFields
from balancer.config.host import host_header_values, is_loopback, named, the_one_here
from balancer.config.limits import EXPOSED_CLIENT_CONNECTIONS, EXPOSED_RATE_LIMIT_PER_MINUTE, LOOPBACK_CONNECTION_SHARE
from balancer.config.nodes import BalancerHostSpec, NodeHostSpec, NodeSpec, PartSpec


class ClusterSpec(ClusterFields):
    """Everything HAProxy and the sidecar need to know about the cluster."""

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
        recorders = self.workers_record_jobs
        queue_clients = (any(node.web or (node.worker and recorders) for node in self.nodes_on(host_name))
                         or (node_host is None and self.jobs.enabled))
        if self.worker_queue_tls and queue_clients:  # its web fronts and workers, and a balancer's jobs service
            files.append((self.queue_client_cert(node_host),
                          _label(f"{prefix}.queue_cert_file", owner.queue_cert_file)))
        for path, label in files:
            if not path.is_file():
                raise ClusterConfigError(f"{label}: {path} is not a file (python -m balancer.multihost.certs makes it)")

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

    def worker_flags(self, node_host: NodeHostSpec | None = None) -> list[str]:
        """Flags every worker of this cluster gets: where it records the REST generations the balancer marks (the
        jobs service, through the worker queue its host's web fronts use) and how it reaches an https one."""
        if not self.workers_record_jobs:
            return []
        flags = ["--jobs-url", self.worker_queue_url]
        if self.tls is not None and self.worker_queue_tls:
            flags += ["--worker-queue-ca", str(self.tls.ca_file),
                      "--worker-queue-cert", str(self.queue_client_cert(node_host))]
        return flags

    @property
    def relays_streams(self) -> bool:
        """Whether Gradio calls (joins and event streams) go through the jobs service's stream relay (the package
        ``jobs.relay``), which hands a call whose web front died to another: ``jobs.relay``, with web fronts running
        their calls as jobs."""
        return self.jobs.enabled and self.jobs.web_fronts and self.jobs.relay

    @property
    def workers_record_jobs(self) -> bool:
        """Whether workers record the REST generations the balancer sends them as jobs (every REST generation is
        a job: with ``jobs.rest`` the jobs service records them instead)."""
        return self.jobs.enabled and not self.jobs.rest

    @property
    def rest_via_jobs(self) -> bool:
        """Whether REST generations go through the jobs service (``jobs.rest``), which records each."""
        return self.jobs.enabled and self.jobs.rest

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

