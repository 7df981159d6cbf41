"""HAProxy's servers on Kubernetes: ``server-template`` slots filled from the parts' headless Services in DNS.

``HAProxyConfigRenderer`` takes ``DnsServers`` as its ``ServerSet`` (``balancer.haproxy.servers``) in place of the
cluster file's nodes.
"""

from __future__ import annotations

from collections.abc import Sequence

from balancer.deploy.jobs_part import JOBS
from balancer.deploy.kube_objects import APP, JOBS_PORT, WEB, WEB_PORT, WORKER, WORKER_PORT
from balancer.haproxy.names import COOKIE_NAME, COOKIE_OPTIONS

RESOLVERS = "k8s"
"""The name of haproxy.cfg's ``resolvers`` section."""


class DnsServers:
    """Server lines for pods found in DNS: ``server-template`` slots filled from a headless Service.

    A headless Service's name resolves to the addresses of its *ready* pods, so a pod enters
    rotation once its readiness probe passes; HAProxy's own checks still run on every slot.
    ``nameservers`` (``host:port``) replace the pod's resolv.conf (tests run their own DNS);
    ``hold_obsolete``: seconds a pod gone from DNS stays in rotation.
    """

    def __init__(self, namespace: str, domain: str, max_pods: int, web_port: int = WEB_PORT,
                 worker_port: int = WORKER_PORT, nameservers: Sequence[str] = (), hold_obsolete: float = 10.0,
                 jobs_port: int = JOBS_PORT) -> None:
        self.namespace = namespace
        self.hold_obsolete = hold_obsolete
        self.domain = domain
        self.max_pods = max_pods
        self.web_port = web_port
        self.worker_port = worker_port
        self.jobs_port = jobs_port
        self.nameservers = list(nameservers)

    def fqdn(self, service: str) -> str:
        """A Service's DNS name (HAProxy's resolvers use no search domains)."""
        return f"{service}.{self.namespace}.svc.{self.domain}"

    def summary(self) -> str:
        return (f"# Nodes: pods of the headless Services {WEB}, {WORKER} and {JOBS} in namespace {self.namespace}, "
                f"up to {self.max_pods} each.")

    def sections(self) -> list[str]:
        servers = [f"    nameserver dns{i} {address}" for i, address in enumerate(self.nameservers, start=1)]
        return ["\n".join([
            "# The cluster's DNS (from the pod's resolv.conf): the server-template slots follow the",
            "# headless Services' ready pods; a pod gone from DNS leaves rotation after `hold obsolete`.",
            f"resolvers {RESOLVERS}",
            *(servers or ["    parse-resolv-conf"]),
            "    resolve_retries 3",
            "    timeout resolve 1s",
            "    timeout retry 1s",
            "    hold valid 5s",
            f"    hold obsolete {self.hold_obsolete:g}s",
            "    # Room for many A records in one answer (one per pod).",
            "    accepted_payload_size 8192",
        ]) + "\n"]

    def cookie_lines(self) -> list[str]:
        return [
            "    # Pods have no stable names: the cookie's value is a hash of the pod's address and",
            "    # this key, the same in every balancer replica so that any of them honours it.",
            f"    cookie {COOKIE_NAME} {COOKIE_OPTIONS} dynamic",
            f"    dynamic-cookie-key {APP}",
        ]

    def _template(self, prefix: str, service: str, port: int, options: str = "") -> str:
        # init-addr none: start with empty slots rather than fail when no pod is ready yet.
        return (f"    server-template {prefix} 1-{self.max_pods} {self.fqdn(service)}:{port} resolvers {RESOLVERS}"
                f" init-addr none resolve-prefer ipv4{options}")

    def web_lines(self) -> list[str]:
        return [self._template("web", WEB, self.web_port)]

    def worker_lines(self) -> list[str]:
        return [self._template("worker", WORKER, self.worker_port, " maxconn 1")]

    def probe_lines(self) -> list[str]:
        # Only ready workers are in DNS, and a worker answers probes while it generates.
        return [self._template("probe", WORKER, self.worker_port)]

    def holding_line(self) -> str:
        return ""  # none: a replay of a job in flight on the last worker pod gets HAProxy's 503

    def jobs_line(self) -> str:
        # Every ready jobs pod serves: they share the job store.
        return self._template("jobs", JOBS, self.jobs_port)
