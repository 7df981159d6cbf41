"""The sidecar: keeps every managed node process on this host, and HAProxy, running and in step.

    python -m balancer.sidecar --cluster cluster.yaml     # node parts only, for an HAProxy run elsewhere
    python -m balancer.sidecar --cluster cluster.yaml --node-host gpu1   # a node host: its nodes and host agent

``launch.py`` runs it in its own process, with HAProxy. This module is the composition root: each process
has a ``ProcessSupervisor`` (``balancer.supervision``) that a ``PartFactory`` builds; the managed nodes, and
what operations act through, are ``ManagedNodes`` (``balancer.operations``); ``/status``, ``/metrics`` and
the operator's actions are served on the sidecar's port (``balancer.api``), with the operations page (it plots the
last hour, sampled here). HAProxy, when given, starts before any node part and stops last; the jobs service
(``python -m jobs``) and keepalived after it. One asyncio event loop owns SIGINT/SIGTERM: on either, every
server goes to ``drain``, every node process gets SIGTERM (SIGKILL after ``stop_grace``), then ``maint``; then
HAProxy stops. The children's logs are rotated by size. ``main`` sets a 077 umask and checks the run directory first.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

import uvicorn

from balancer.api.basic_auth import BasicAuth
from balancer.api.cert_metrics import CertificateCollector, tls_files
from balancer.api.gpu_xid import XidWatcher
from balancer.api.host_check import listener_hosts
from balancer.api.metrics import FloatingView, SidecarMetrics
from balancer.api.routes import HAProxyView, OperationRoutes, status_app
from balancer.config.basics import ClusterConfigError
from balancer.config.cluster import ClusterSpec
from balancer.config.loading import load_cluster_file, parse_cluster
from balancer.config.nodes import NodeHostSpec, NodeSpec
from balancer.haproxy.gate import HAProxyGate
from balancer.haproxy.process import HAProxyProcess
from balancer.haproxy.runtime_api import AsyncRuntimeAPI
from balancer.haproxy.runtime_protocol import RuntimeAPIError
from balancer.multihost.host_agent import HostAgentUnavailable
from balancer.multihost.keepalived import KeepalivedChild
from balancer.multihost.part_tls import NodeHostTLS
from balancer.operations.actions import OperatorActions
from balancer.operations.nodes import ManagedNodes
from balancer.operations.parts import PartFactory
from balancer.supervision.causes import DeathClassifier, KernelLog, OomKillCounter
from balancer.supervision.log_rotation import LogRotation
from balancer.system.run_dir import prepare_run_dir
from webui import log_setup
from webui.contract import PRIVATE_UMASK
from webui.embedded_server import EmbeddedServer
from webui.tasks import cancel_and_wait

logger = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
VIEW_TIMEOUT = 0.3
"""Seconds ``/status`` waits for HAProxy's view of servers and queues before it answers without."""


class Sidecar:
    """Supervises HAProxy (when given) and every managed node part of a cluster, and serves their status."""

    def __init__(self, spec: ClusterSpec, api: AsyncRuntimeAPI | None, base_env: dict[str, str] | None = None,
                 haproxy: HAProxyProcess | None = None, node_host: NodeHostSpec | None = None,
                 nodes: list[NodeSpec] | None = None, keepalived: KeepalivedChild | None = None) -> None:
        self.spec, self.settings = spec, spec.sidecar
        tls = NodeHostTLS.prepare(spec, node_host) if node_host is not None else None
        self.gate = HAProxyGate(api, pulled=node_host is not None)
        self.metrics = SidecarMetrics()
        self.metrics.registry.register(CertificateCollector(tls_files(spec.tls) if node_host is None else []))
        self.xid = XidWatcher()
        """This host's GPUs' XID errors (NVML events, one thread), in ``/metrics``."""
        self.metrics.registry.register(self.xid)
        classifier = DeathClassifier(OomKillCounter.for_this_process(self.settings.oom_counter_file), KernelLog())
        env = dict(os.environ if base_env is None else base_env)
        factory = PartFactory(spec, self.gate, env, tls, classifier, self.metrics)
        view_api = AsyncRuntimeAPI(api.socket_path, timeout=VIEW_TIMEOUT) if api is not None else None
        self.nodes = ManagedNodes(spec, factory, node_host, nodes, view_api, renders_config=haproxy is not None)
        """The managed nodes, their supervisors, and what operations act through."""
        self.actions = OperatorActions(spec, self.nodes)
        """The operator's operations (rolling restart, add and remove a node), one at a time."""
        self.balancer = factory.haproxy(haproxy) if haproxy is not None else None
        """HAProxy's supervisor, when the sidecar runs it."""
        jobs = [factory.jobs()] if haproxy is not None and spec.jobs.enabled else []
        self.companions = jobs + ([factory.keepalived(keepalived)] if keepalived is not None else [])
        """The balancer's own processes besides HAProxy, started after it and stopped before it: the jobs service
        (it dispatches through HAProxy's worker queue) and, on a balancer sharing a floating address, keepalived."""
        self.floating = (FloatingView(spec.floating.address, keepalived.vrrp_state)
                         if keepalived is not None and spec.floating is not None else None)
        """Whether this balancer holds the floating address (keepalived's word), for ``/status`` and ``/metrics``."""
        self.log_rotation = LogRotation.of_run_dir(spec.run_dir, self.settings.log_max_bytes, self.settings.log_keep,
                                                   self.settings.log_check_interval)
        """Keeps the children's logs (and HAProxy's) in the run directory bounded in size."""

    def retry(self, node: str, part: str) -> bool | None:
        """Retry a crash-looped part: None if there is no such part, else whether it was crash-looped."""
        everything = [*self.companions, *self.nodes.supervisors] + ([self.balancer] if self.balancer else [])
        for supervisor in everything:
            if (supervisor.status.node, supervisor.status.part) == (node, part):
                return supervisor.retry()
        return None

    async def haproxy_view(self) -> HAProxyView | None:
        """HAProxy's view of servers and queues; None when it does not answer within ``VIEW_TIMEOUT``."""
        if self.nodes.view_api is None:
            return None
        try:
            return HAProxyView.from_stat(await self.nodes.view_api.show_stat())
        except (OSError, RuntimeAPIError):  # OSError includes TimeoutError
            return None

    def request_stop(self, signum: int | None = None) -> None:
        """Begin a graceful shutdown (signal handler)."""
        if not self.nodes.stopping.is_set():
            name = signal.Signals(signum).name if signum else "request"
            logger.info("shutting down (%s): draining and stopping %d processes", name, len(self.nodes.supervisors))
        self.nodes.stop()

    async def run(self) -> None:
        """Supervise until SIGINT/SIGTERM (or ``request_stop``), then stop every process.

        ``StartFailed`` when HAProxy's first start failed (nothing else was started then).
        """
        if self.nodes.host_agent is not None:
            await self.nodes.host_agent.start()  # first: an address it cannot bind is an error before anything started
        loop = asyncio.get_running_loop()
        for signum in STOP_SIGNALS:
            loop.add_signal_handler(signum, self.request_stop, signum)
        retry_auth = BasicAuth(self.spec.stats.user, self.spec.stats.password)
        haproxy_status = self.balancer.status if self.balancer is not None else None
        app = status_app(self.nodes.statuses, self.metrics, self.retry, retry_auth, haproxy_status,
                         drain=self.nodes.drain, view=self.haproxy_view,
                         operations=OperationRoutes(self.actions.start_rolling_restart, self.actions.operation,
                                                   self.actions.start_add_node, self.actions.start_remove_node),
                         floating=self.floating, companions=[supervisor.status for supervisor in self.companions],
                         allowed_hosts=listener_hosts(self.settings.host, self.settings.port),
                         history_interval=self.settings.history_interval)
        config = uvicorn.Config(
            app,
            host=self.settings.host,
            port=self.settings.port,
            log_level="warning",
            lifespan="off",
        )
        server = EmbeddedServer(config)
        server_task = asyncio.create_task(server.serve())
        rotation = asyncio.create_task(self.log_rotation.run(), name="log-rotation")
        history = asyncio.create_task(app.state.ops_history.run(), name="operations-history")
        try:
            await asyncio.to_thread(self.xid.start)
            await self.nodes.supervise(self.balancer, self.companions)
        finally:
            await cancel_and_wait(history)
            await cancel_and_wait(rotation)
            await asyncio.to_thread(self.xid.stop)
            await self.actions.operations.aclose()
            if self.nodes.traffic is not None:
                await self.nodes.traffic.aclose()
            server.should_exit = True
            await server_task
            if self.nodes.host_agent is not None:
                await self.nodes.host_agent.aclose()
            for signum in STOP_SIGNALS:
                loop.remove_signal_handler(signum)
        logger.info("all processes stopped")


def configure_logging() -> None:
    """Timestamped logs on stderr, text or JSON lines (``PORTRAIT_LOG_FORMAT``); no per-probe lines from httpx."""
    log_setup.configure_logging()
    logging.getLogger("httpx").setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    """``python -m balancer.sidecar --cluster FILE``: supervise the managed nodes of a cluster file.

    HAProxy is not started here: this talks to one already running (``launch.py`` runs both)."""
    parser = argparse.ArgumentParser(prog="python -m balancer.sidecar", description=__doc__.splitlines()[0])
    parser.add_argument("--cluster", type=Path, required=True,
                        help="Cluster YAML file (see assets/cluster.example.yaml).")
    parser.add_argument("--no-haproxy", action="store_true", help="Do not talk to HAProxy's runtime API.")
    parser.add_argument("--node-host", metavar="NAME",
                        help="Run this node host of the cluster file (its nodes, and its host agent for every "
                        "balancer's HAProxy) instead of the balancer host's local nodes; implies --no-haproxy.")
    args = parser.parse_args(argv)
    os.umask(PRIVATE_UMASK)
    configure_logging()
    try:
        spec = parse_cluster(load_cluster_file(args.cluster))
        node_host = spec.node_host(args.node_host) if args.node_host else None
        prepare_run_dir(spec.run_dir)
        api = None if args.no_haproxy or node_host else AsyncRuntimeAPI(
            spec.socket_path, timeout=spec.sidecar.haproxy_command_timeout)
        sidecar = Sidecar(spec, api, node_host=node_host)
    except (ClusterConfigError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return run_sidecar(sidecar)


def run_sidecar(sidecar: Sidecar) -> int:
    """Run a sidecar without HAProxy to its end: 0, or 2 when its host agent's address cannot be bound."""
    try:
        asyncio.run(sidecar.run())
    except HostAgentUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
