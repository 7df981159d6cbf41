"""The cluster file's top level: ``ClusterFields``, every key of a cluster and the checks across them.

Its simple sections are in ``balancer.config.basics`` (listeners), ``access`` (stats, tls), ``limits``, ``health``
(health, sidecar) and ``jobs_service`` (jobs), its nodes and hosts in ``balancer.config.nodes``;
``balancer.config.cluster.ClusterSpec`` adds what is derived from these fields.

Safe by default: the public frontend, the stats page, the runtime API and the sidecar listen on 127.0.0.1 only;
the stats page always needs a password (a random one unless you set one); rate limiting and HTTP basic auth are
off until configured.
"""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path

from pydantic import Field, model_validator

from balancer.config.access import StatsSpec, TLSSpec
from balancer.config.basics import WILDCARD_HOSTS, Listener
from balancer.config.basics import StrictModel as _Model
from balancer.config.health import HealthSpec, SidecarSpec
from balancer.config.host import is_loopback
from balancer.config.jobs_service import JobsSpec
from balancer.config.limits import LimitsSpec
from balancer.config.nodes import BalancerHostSpec, FloatingAddressSpec, NodeHostSpec, NodeSpec


class ClusterFields(_Model):
    """Every key of a cluster file, checked against each other (names, ports, hosts, TLS, jobs)."""

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
    def _check_cluster(self) -> ClusterFields:
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

    @property
    def worker_queue_tls(self) -> bool:
        """Whether the worker queue is served over TLS (``tls.worker_queue``, else when not on loopback)."""
        if self.tls is None:
            return False
        if self.tls.worker_queue is not None:
            return self.tls.worker_queue
        return not is_loopback(self.worker_queue.host)

    @property
    def needs_shared_secret(self) -> bool:
        """Whether web fronts on other hosts must show the cluster secret at the worker queue (plain HTTP)."""
        return not self.worker_queue_tls and any(node.web is not None and node.node_host for node in self.nodes)


def _claim_port(seen: dict[int, str], port: int, field: str, owner: str) -> None:
    """Record that ``owner`` listens on ``port`` (set by ``field``); ValueError when another one already does."""
    if port in seen:
        raise ValueError(f"{field}: {port} is already used by {seen[port]}")
    seen[port] = owner
