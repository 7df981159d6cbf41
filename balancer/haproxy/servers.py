"""The node server lines of haproxy.cfg, and the same servers as the runtime API adds them.

``ServerSet`` is what the template asks for; ``StaticServers`` lists the cluster file's nodes and this host's jobs
service (the Kubernetes renderer, ``balancer.deploy.dns_servers.DnsServers``, finds pods in DNS instead).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from balancer.config.access import TLSSpec
from balancer.config.cluster import ClusterSpec
from balancer.config.nodes import NodeSpec
from balancer.haproxy.agent import agent_send
from balancer.haproxy.names import (
    COOKIE_NAME,
    COOKIE_OPTIONS,
    HOLDING_SERVER,
    JOBS_SERVER,
    PROBES_BACKEND,
    WEBS_BACKEND,
    WORKERS_BACKEND,
)
from balancer.haproxy.syntax import config_path_arg, duration


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
        """One comment line for the header: which servers."""

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

    def jobs_line(self) -> str:
        """The ``jobs`` backend's server (its backups, ``jobs.backups``, come apart)."""

    def holding_line(self) -> str:
        """The ``workers`` backend's backup: the jobs service that holds REST jobs while no worker is up ("": none)."""


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

    def probe_lines(self) -> list[str]:
        return [
            self._line(node, node.worker.address, f"track {WORKERS_BACKEND}/{node.name} no-check")  # type: ignore[union-attr]
            for node in self.spec.workers
        ]

    def jobs_line(self) -> str:
        jobs = self.spec.jobs
        return f"    server {JOBS_SERVER} {jobs.connect_host}:{jobs.port}  # this host's, run by its sidecar"

    def holding_line(self) -> str:
        if not self.spec.workers_record_jobs:
            return ""
        jobs = self.spec.jobs
        return f"    server {HOLDING_SERVER} {jobs.connect_host}:{jobs.port} backup  # this host's jobs service"

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

    def _web_options(self, node: NodeSpec) -> str:
        return f"cookie {node.name}" + self._agent(node, WEBS_BACKEND)

    def _worker_options(self, node: NodeSpec) -> str:
        return "maxconn 1" + self._agent(node, WORKERS_BACKEND)

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

    def _line(self, node: NodeSpec, address: str, options: str) -> str:
        if node.node_host is not None:
            where = f"on node host {node.node_host}: its host agent gives the state; lost host, jobs replay"
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
        return tls_options(tls, node.tls_name())


def tls_options(tls: TLSSpec, name: str) -> str:
    """A server line's mutual TLS: our client certificate, and its certificate checked against the cluster CA
    and ``name`` (health checks too)."""
    return (f" ssl verify required ca-file {config_path_arg(tls.ca_file)} crt {config_path_arg(tls.cert_file)}"
            f" verifyhost {name}")
