"""The sidecar: keeps every managed node process on this host, and HAProxy, running and in step.

    python -m balancer.sidecar --cluster cluster.yaml     # node parts only, for an HAProxy run elsewhere
    python -m balancer.sidecar --cluster cluster.yaml --node-host gpu1   # a node host: its nodes and host agent

``launch.py`` runs the sidecar in its own process, with HAProxy.

Each supervised process has one ``ProcessSupervisor`` (``balancer.supervisor``: start, probe,
restart with backoff, crash loop, ``POST /retry``) over a ``Child`` (``balancer.children``):

- each managed node part (web front, worker): started in its own process group, output
  appended to ``RUN_DIR/logs/NODE-PART.log`` (a web front gets its own Gradio temp dir,
  ``RUN_DIR/gradio/NODE``), probed over HTTP (workers: ``/readyz``, model loaded and warm; web
  fronts: ``/healthz``, HAProxy's own checks decide readiness); its server is in ``maint``
  until it answers, ``ready`` then, ``maint`` first thing when it dies; a worker with a ``gpu``
  gets ``CUDA_VISIBLE_DEVICES=GPU`` and ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` (``balancer.gpus``);
- HAProxy, when given (``launch.py`` gives it): started before any node part (if that first
  start fails, ``run`` raises ``StartFailed`` with HAProxy's alerts), probed over its runtime
  API, restarted under the same policy; after each (re)start every server's state is told to
  it again (``HAProxyGate.reapply``). It is stopped last.

Everything runs on one asyncio event loop, which owns SIGINT/SIGTERM: on either, every server
is set to ``drain``, every node process gets SIGTERM, then SIGKILL after ``stop_grace`` (the
whole process group, so nothing is orphaned), then ``maint``; then HAProxy stops. HAProxy's
runtime API is spoken asynchronously (``AsyncRuntimeAPI``), the kernel log and NVML's GPU facts
read in threads, so nothing blocks the loop. ``/status`` and ``/metrics`` are served on the
sidecar's port (``balancer.status``), with ``POST /retry/NODE/PART`` and the operator's drain of a
node, ``POST /drain/NODE`` / ``POST /ready/NODE`` (``HAProxyGate.hold``: a drained node's servers
stay in ``drain`` whatever their supervisors say, until ``ready``; ``python -m balancer.ctl``). Nodes are
added and removed at runtime (``balancer.node_changes``): each node's supervisors have their own stop event
and tasks, and haproxy.cfg is re-rendered with the current nodes for an HAProxy restart.

On a node host (``--node-host``, or ``launch.py --role node``) there is no HAProxy: the sidecar
runs that host's nodes and serves HAProxy's agent protocol (``balancer.host_agent``) so that every
balancer's HAProxy learns each part's state, the one ``HAProxyGate.effective`` computes.

``main`` (like ``launch.py``) sets a 077 umask and checks the run directory first
(``balancer.run_dir``), so every file the sidecar and its children write is private.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import logging
import os
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import uvicorn

from balancer.basic_auth import BasicAuth
from balancer.causes import DeathClassifier, KernelLog, OomKillCounter
from balancer.children import HAProxyChild, NodeProcess
from balancer.cluster import (
    DISPATCH_AGENT_PORT_OFFSET,
    LOOPBACK,
    ClusterConfigError,
    ClusterSpec,
    NodeHostSpec,
    NodeSpec,
    PartSpec,
    load_cluster_file,
    parse_cluster,
)
from balancer.gate import HAProxyGate, ParkGuard, ServerKey
from balancer.gpus import GPU_ENV
from balancer.haproxy import HAProxyProcess, write_config
from balancer.haproxy_config import PART_BACKENDS, StaticServers, render_config
from balancer.host_agent import HostAgent, HostAgentUnavailable
from balancer.host_check import listener_hosts
from balancer.keepalived import KeepalivedChild
from balancer.node_changes import AddNode, AddNodeRequest, RemoveNode, RemoveNodeRequest
from balancer.operations import OperationError, OperationRunner, RollingRestart, Traffic, parse_request
from balancer.part_tls import NodeHostTLS, ProbeTLS
from balancer.run_dir import prepare_run_dir
from balancer.runtime_api import AsyncRuntimeAPI, RuntimeAPIError, ServerState, ServerStatus
from balancer.standby import WorkerWithStandby, standby_worker
from balancer.status import (
    BALANCER,
    FloatingView,
    HAProxyView,
    OperationRoutes,
    PartStatus,
    SidecarMetrics,
    status_app,
)
from balancer.supervisor import ProcessSupervisor
from balancer.traffic import HAProxyTraffic, PartCounts, PartTraffic, TrafficSource
from webui.contract import BALANCED_QUEUE_SIZE, PRIVATE_UMASK

logger = logging.getLogger("balancer.sidecar")

PROBE_PATHS = {"web": "/healthz", "worker": "/readyz"}
"""What the sidecar probes: a worker is ready when its model is warm; a web front when it serves."""
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
VIEW_TIMEOUT = 0.3
"""Seconds ``/status`` waits for HAProxy's view of servers and queues before it answers without."""


def part_command(spec: ClusterSpec, node: NodeSpec, kind: str, part: PartSpec,
                 tls: NodeHostTLS | None = None) -> list[str]:
    """The command line of a managed node part (its own ``command`` if it has one); with ``tls`` (a node
    host's), it serves mutual TLS, and a web front presents that host's queue certificate to the worker queue."""
    if part.command:
        return list(part.command)
    common = ["--host", part.host, "--port", str(part.port), *(tls.server_args() if tls is not None else [])]
    if kind == "worker":
        dispatch = ["--dispatch-agent-port", str(part.dispatch_agent_port)] if part.dispatch_agent_port else []
        if dispatch and node.node_host is not None:
            dispatch += ["--dispatch-agent-host", LOOPBACK]  # asked by this host's host agent only
        return [sys.executable, "-m", "webui.worker", *common, "--node", node.name,
                "--queue-size", str(BALANCED_QUEUE_SIZE), *dispatch, *part.args]
    web = spec.web_flags(node_host=tls.host if tls is not None else None)  # its host's queue certificate
    return [sys.executable, "-m", "webui.web", *common, "--node", node.name, *web, *part.args]


def replace_flag(args: list[str], flag: str, value: str) -> list[str]:
    """``args`` with ``flag VALUE`` (or ``flag=VALUE``) set to ``value``: replaced where it is, else added."""
    result, index, found = [], 0, False
    while index < len(args):
        arg = args[index]
        if arg == flag and index + 1 < len(args):
            result += [flag, value]
            index += 2
            found = True
            continue
        if arg.startswith(flag + "="):
            result.append(f"{flag}={value}")
            found = True
        else:
            result.append(arg)
        index += 1
    return result if found else [*result, flag, value]


PORT_SEARCH = 200
"""Ports ``next_free_port`` tries before it gives up."""


def next_free_port(first: int, taken: set[int]) -> int:
    """The first port from ``first`` on that is not ``taken`` and that nothing on this host listens on
    (a bind on loopback: instant, no network I/O); ``OperationError`` after ``PORT_SEARCH`` tries."""
    for port in range(first, min(first + PORT_SEARCH, 65536)):
        if port in taken:
            continue
        with socket.socket() as probe:
            try:
                probe.bind((LOOPBACK, port))
            except OSError:
                continue
        return port
    raise OperationError(f"no free port in {first}-{first + PORT_SEARCH - 1}")


def retry_command(spec: ClusterSpec, node: str, part: str) -> str:
    """The operator's command that retries a crash-looped part (the password left for them to fill in)."""
    return f"curl -u {spec.stats.user}:STATS_PASSWORD -X POST {spec.sidecar.url}/retry/{node}/{part}"


class _EmbeddedServer(uvicorn.Server):
    """uvicorn serving inside the sidecar's event loop; the sidecar owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class Sidecar:
    """Supervises HAProxy (when given) and every managed node part of a cluster, and serves their status."""

    def __init__(
        self,
        spec: ClusterSpec,
        api: AsyncRuntimeAPI | None,
        base_env: dict[str, str] | None = None,
        haproxy: HAProxyProcess | None = None,
        node_host: NodeHostSpec | None = None,
        nodes: list[NodeSpec] | None = None,
        keepalived: KeepalivedChild | None = None,
    ) -> None:
        self.spec = spec
        self.node_host = node_host
        """The node host this sidecar runs (its nodes, its host agent); None: the balancer host's local nodes.
        ``nodes``, when given, are the nodes to run instead (none on a balancer-only host)."""
        self.settings = spec.sidecar
        self.tls = NodeHostTLS.prepare(spec, node_host) if node_host is not None else None
        """A node host's mutual TLS with ``tls``: its parts' flags, its probes' identity (``balancer.part_tls``)."""
        self.gate = HAProxyGate(api, pulled=node_host is not None)
        self.view_api = AsyncRuntimeAPI(api.socket_path, timeout=VIEW_TIMEOUT) if api is not None else None
        self.metrics = SidecarMetrics()
        self.classifier = DeathClassifier(OomKillCounter.for_this_process(self.settings.oom_counter_file), KernelLog())
        self.stopping = asyncio.Event()
        env = dict(os.environ if base_env is None else base_env)
        self.env = env
        self.node_stops: dict[str, asyncio.Event] = {}
        """Each node's own stop (``remove_node``); all set on shutdown."""
        self.names_in_haproxy: set[str] = set()
        """Removed nodes whose servers HAProxy still has (kept in ``maint``, or not deleted): not given again."""
        self.tasks: dict[str, list[asyncio.Task]] = {}
        """The supervisors' tasks of each node."""
        self.supervisors = [
            self._supervisor(node, kind, part, env)
            for node in (spec.nodes_on(node_host.name if node_host else None) if nodes is None else nodes)
            for kind, part in (("worker", node.worker), ("web", node.web))
            if part is not None
        ]
        """One per managed node part."""
        self.balancer = self._balancer_supervisor(haproxy) if haproxy is not None else None
        """HAProxy's, when the sidecar runs it."""
        self.companions = [self._keepalived_supervisor(keepalived)] if keepalived is not None else []
        """keepalived's, on a balancer sharing a floating address: started after HAProxy, stopped before it."""
        self.floating = (FloatingView(spec.floating.address, keepalived.vrrp_state)
                         if keepalived is not None and spec.floating is not None else None)
        """Whether this balancer holds the floating address (keepalived's word), for ``/status`` and ``/metrics``."""
        self.host_agent = (HostAgent(node_host.address, node_host.host_agent_port, self.server_state,
                                     spec.health.host_agent_interval, self.dispatch_agent_port, self.gate.state_now)
                           if node_host else None)
        """Tells every balancer its parts' states (HAProxy's agent checks), on a node host."""
        self.traffic: TrafficSource | None = None
        """What an operation waits on: this host's HAProxy's view, or on a node host the parts' own counters."""
        if self.view_api is not None:
            self.traffic = HAProxyTraffic(self.view_api, self.parts_of, PartCounts(self.settings.probe_timeout))
        elif self.host_agent is not None:
            self.traffic = PartTraffic(self.parts_of, self.reachable_web_fronts, self.host_agent, self.gate,
                                       self.settings.probe_timeout, self._host_probe_tls())
        self.operations = OperationRunner()
        """The operator's operations (rolling restart), one at a time."""

    def _supervisor(self, node: NodeSpec, kind: str, part: PartSpec, env: dict[str, str]) -> ProcessSupervisor:
        url = self.spec.part_url(node, part)
        status = PartStatus(node=node.name, part=kind, backend=PART_BACKENDS[kind], url=url)
        logs = self.spec.run_dir / "logs"
        own_env = {"PYTHONUNBUFFERED": "1"}
        private_dirs = [logs]
        if kind == "web" and "GRADIO_TEMP_DIR" not in part.env:
            # Gradio's uploads and generated images: private to this node, not the shared /tmp/gradio.
            gradio = self.spec.run_dir / "gradio"
            own_env["GRADIO_TEMP_DIR"] = str(gradio / node.name)
            private_dirs += [gradio, gradio / node.name]
        if kind == "worker" and part.gpu is not None:
            # Its own GPU, numbered as NVML and nvidia-smi number it; the part's env may say otherwise.
            own_env.update(CUDA_VISIBLE_DEVICES=str(part.gpu), **GPU_ENV)
        child_env = {**env, **own_env, **part.env}
        if kind == "worker":
            status.gpu = child_env.get("CUDA_VISIBLE_DEVICES")
        command = part_command(self.spec, node, kind, part, self.tls)
        process = {
            "env": child_env, "log_path": logs / f"{node.name}-{kind}.log", "probe_url": url + PROBE_PATHS[kind],
            "probe_timeout": self.settings.probe_timeout, "stop_grace": self.settings.stop_grace, "gate": self.gate,
            "server": (PART_BACKENDS[kind], node.name), "private_dirs": tuple(private_dirs),
            "probe_tls": self.tls.probe(node.tls_name()) if self.tls is not None else None,
        }
        if kind == "worker" and part.standby:
            standby = standby_worker(f"{node.name}/{kind}", command, self.spec.run_dir, self.settings, process)
            status.standby = standby.snapshot
            child = WorkerWithStandby(f"{node.name}/{kind}", command, standby=standby, **process)
        else:
            child = NodeProcess(f"{node.name}/{kind}", command, **process)
        return self._supervise_child(status, child)

    def _balancer_supervisor(self, haproxy: HAProxyProcess) -> ProcessSupervisor:
        status = PartStatus(node=BALANCER, part="haproxy", backend=None, url=self.spec.public.url)
        probe_api = AsyncRuntimeAPI(haproxy.socket_path, timeout=self.settings.probe_timeout)
        return self._supervise_child(status, HAProxyChild(haproxy, probe_api, self.gate))

    def _keepalived_supervisor(self, keepalived: KeepalivedChild) -> ProcessSupervisor:
        status = PartStatus(node=BALANCER, part="keepalived", backend=None, url=keepalived.probe_target)
        return self._supervise_child(status, keepalived)

    def _supervise_child(self, status: PartStatus, child: HAProxyChild | NodeProcess | KeepalivedChild
                         ) -> ProcessSupervisor:
        return ProcessSupervisor(
            status=status,
            child=child,
            settings=self.settings,
            classifier=self.classifier,
            metrics=self.metrics,
            retry_hint=retry_command(self.spec, status.node, status.part),
        )

    def server_state(self, key: ServerKey) -> ServerState | None:
        """The state a server of this sidecar's parts is to have in every HAProxy; None if it is not one of them.

        ``maint`` until its supervisor has said anything (the host agent answers before the first start)."""
        if not any((status.backend, status.node) == key for status in self.statuses()):
            return None
        return self.gate.effective(key) if key in self.gate.wanted else "maint"

    def dispatch_agent_port(self, key: ServerKey) -> int | None:
        """The dispatch agent port of one of this sidecar's workers; None for any other server."""
        backend, name = key
        if backend != PART_BACKENDS["worker"] or self.server_state(key) is None:
            return None
        node = next((node for node in self.spec.nodes if node.name == name), None)
        return node.worker.dispatch_agent_port if node is not None and node.worker is not None else None

    def statuses(self) -> list[PartStatus]:
        """The status record of every supervised node part."""
        return [supervisor.status for supervisor in self.supervisors]

    def next_node(self, gpu: int | None) -> NodeSpec:
        """A new local node like the first managed one (its flags, env): the next free ``nodeN`` name, ports one
        above the highest in use (a dispatch agent ``DISPATCH_AGENT_PORT_OFFSET`` above its worker when the
        template has one), on GPU ``gpu``. ``OperationError`` when there is no node to copy."""
        local = [node for node in self.spec.nodes_on(None) if node.web is not None and node.worker is not None]
        if not local:
            raise OperationError("no managed local node with a web front and a worker to copy")
        template = local[0]
        assert template.web is not None and template.worker is not None
        if template.web.command or template.worker.command:
            raise OperationError(f"{template.name} runs its own command: a new node cannot copy it")
        names = {node.name for node in self.spec.nodes} | self.names_in_haproxy
        name = next(f"node{i}" for i in range(len(names) + 1, len(names) + 1000) if f"node{i}" not in names)
        parts = [part for node in self.spec.nodes for part in (node.web, node.worker) if part is not None]
        listeners = (self.spec.public, self.spec.worker_queue, self.spec.stats, self.spec.sidecar)
        taken = {port for part in parts for port in (part.port, part.dispatch_agent_port) if port}
        taken |= {listener.port for listener in listeners}
        web_port = next_free_port(max(part.port for node in self.spec.nodes if (part := node.web)) + 1, taken)
        taken.add(web_port)
        worker_port = next_free_port(max(part.port for node in self.spec.nodes if (part := node.worker)) + 1, taken)
        taken.add(worker_port)
        agent_port = (next_free_port(worker_port + DISPATCH_AGENT_PORT_OFFSET, taken)
                      if template.worker.dispatch_agent_port else None)
        worker = template.worker.model_copy(update={"port": worker_port, "dispatch_agent_port": agent_port,
                                                    "gpu": gpu, "args": list(template.worker.args),
                                                    "env": dict(template.worker.env)})
        web = template.web.model_copy(update={"port": web_port, "args": list(template.web.args),
                                              "env": dict(template.web.env)})
        return NodeSpec(name=name, web=web, worker=worker)

    async def start_node(self, node: NodeSpec) -> None:
        """Add ``node``'s servers to HAProxy (in ``maint``) and start its supervisors; re-render haproxy.cfg.
        ``OSError`` when HAProxy refused a server (those added are deleted again; nothing started)."""
        added = []
        for server in StaticServers(self.spec).dynamic_servers(node):
            try:
                await self.runtime_api().add_server(server.backend, server.name, server.address, server.options,
                                                    agent="agent-check" in server.options)
            except (OSError, RuntimeAPIError) as exc:
                for backend, name in reversed(added):
                    with contextlib.suppress(OSError, RuntimeAPIError):
                        await self.runtime_api().delete_server(backend, name)
                raise OSError(str(exc)) from exc
            added.append((server.backend, server.name))
            if server.backend not in PART_BACKENDS.values():
                # The probe server has no supervisor to tell its state: its own check decides from now on.
                with contextlib.suppress(OSError, RuntimeAPIError):
                    await self.runtime_api().set_server_state(server.backend, server.name, "ready")
        self.spec.nodes.append(node)
        self._rerender()
        supervisors = [self._supervisor(node, kind, part, self.env)
                       for kind, part in (("worker", node.worker), ("web", node.web)) if part is not None]
        self.supervisors += supervisors
        self._start_tasks(node.name, supervisors)
        logger.warning("%s: added at runtime (not written back to the cluster file)", node.name)

    async def stop_node(self, node: str) -> list[str]:
        """Stop ``node``'s processes, delete its servers and forget it; re-render haproxy.cfg. The servers left in
        ``maint`` instead (HAProxy 2.8 deletes no server that a haproxy.cfg ``track`` points to: a worker of the
        cluster file; gone at HAProxy's next start); ``OSError`` when HAProxy did not delete a server for
        another reason (the node is forgotten all the same)."""
        parts = self.parts_of(node)
        self.node_stops[node].set()
        await asyncio.gather(*self.tasks.pop(node, []), return_exceptions=True)
        spec = next(entry for entry in self.spec.nodes if entry.name == node)
        self.supervisors = [supervisor for supervisor in self.supervisors if supervisor not in parts]
        self.spec.nodes.remove(spec)
        del self.node_stops[node]
        self._rerender()
        failures, kept = [], []
        for server in reversed(StaticServers(self.spec).dynamic_servers(spec)):
            self.gate.forget((server.backend, server.name))
            try:
                await self.runtime_api().delete_server(server.backend, server.name)
            except RuntimeAPIError as exc:
                (kept if "other configuration elements" in str(exc) else failures).append(str(exc))
            except OSError as exc:
                failures.append(str(exc))
        logger.warning("%s: removed at runtime (not written back to the cluster file)", node)
        if kept or failures:
            self.names_in_haproxy.add(node)
        if failures:
            raise OSError("; ".join(failures))
        return kept

    def runtime_api(self) -> AsyncRuntimeAPI:
        """The runtime API for commands (``OSError`` without one)."""
        if self.gate.api is None:
            raise OSError("no HAProxy runtime API")
        return self.gate.api

    def _rerender(self) -> None:
        """haproxy.cfg with the current nodes, for an HAProxy the sidecar restarts."""
        if self.balancer is not None:
            write_config(render_config(self.spec), self.spec.config_path)

    def _start_tasks(self, node: str, supervisors: list[ProcessSupervisor]) -> None:
        stop = self.node_stops.setdefault(node, asyncio.Event())
        if self.stopping.is_set():
            stop.set()
        self.tasks.setdefault(node, []).extend(asyncio.create_task(s.run(stop)) for s in supervisors)

    def start_add_node(self, body: object) -> dict:
        """Start adding a node (``POST /add-node``): its report; ``OperationError`` when it cannot."""
        request = parse_request(body, AddNodeRequest)
        if self.view_api is None or self.node_host is not None:
            raise OperationError("no HAProxy runtime API: adding a node adds its servers to HAProxy")
        self.operations.check_free()
        node = self.next_node(request.gpu)
        operation = AddNode(self, node, request.ready_timeout or self.settings.start_timeout)
        return self.operations.start("add-node", operation.run).document()

    def start_remove_node(self, node: str, body: object) -> dict:
        """Start removing ``node`` (``POST /remove-node/NODE``): its report; ``OperationError`` when it cannot."""
        request = parse_request(body, RemoveNodeRequest)
        if self.view_api is None or self.node_host is not None:
            raise OperationError("no HAProxy runtime API: removing a node deletes its servers from HAProxy")
        if node not in self.managed_nodes():
            raise OperationError(f"no managed node {node!r} (see ctl status)")
        if self.managed_nodes() == [node]:
            raise OperationError(f"{node} is the last managed node: the cluster would have none left")
        self.operations.check_free()
        return self.operations.start("remove-node", RemoveNode(self, node, request).run).document()

    def retry(self, node: str, part: str) -> bool | None:
        """Retry a crash-looped part: None if there is no such part, else whether it was crash-looped."""
        everything = [*self.companions, *self.supervisors] + ([self.balancer] if self.balancer else [])
        for supervisor in everything:
            if (supervisor.status.node, supervisor.status.part) == (node, part):
                return supervisor.retry()
        return None

    async def drain(self, node: str, drained: bool) -> dict | None:
        """An operator's drain of a managed node (every part's server), or its end: None if there is no
        such node, else the node's admin state, the state each of its servers is told, and whether
        HAProxy took them all (if not, they are told again when it restarts, or when asked again)."""
        parts = [supervisor.status for supervisor in self.supervisors if supervisor.status.node == node]
        if not parts:
            return None
        logger.warning("%s: %s, as an operator asked", node, "draining" if drained else "back in rotation")
        servers, told = {}, True
        for status in parts:
            assert status.backend is not None
            status.drained = drained
            told = await self.gate.hold(status.backend, node, drained) and told
            servers[f"{status.backend}/{node}"] = self.gate.effective((status.backend, node))
        told = await self.balancers_took([(status.backend or "", node) for status in parts]) and told
        return {"node": node, "admin": "drain" if drained else "ready", "servers": servers, "haproxy_told": told}

    def managed_nodes(self) -> list[str]:
        """Names of the managed nodes, in the cluster file's order."""
        return list(dict.fromkeys(supervisor.status.node for supervisor in self.supervisors))

    def parts_of(self, node: str) -> list[ProcessSupervisor]:
        """The supervisors of a node's parts."""
        return [supervisor for supervisor in self.supervisors if supervisor.status.node == node]

    def configure_worker(self, node: str, model: str | None, lora: str | None) -> None:
        """Set a worker's ``--model`` / ``--lora`` in the cluster spec; its next start uses them."""
        spec = next(entry for entry in self.spec.nodes if entry.name == node)
        if spec.worker is None:
            return
        args = spec.worker.args
        for flag, value in (("--model", model), ("--lora", lora)):
            if value is not None:
                args[:] = replace_flag(args, flag, value)
        for supervisor in self.parts_of(node):
            if supervisor.status.part == "worker" and isinstance(supervisor.child, NodeProcess):
                supervisor.child.command = part_command(self.spec, spec, "worker", spec.worker, self.tls)
        logger.warning("%s: worker arguments now %s (not written back to the cluster file)", node, args)

    async def park(self, backend: str, server: str, parked: bool, guard: ParkGuard | None = None) -> bool:
        """Keep a server in ``maint`` whatever its supervisor says, or stop (``HAProxyGate.park``); on a node
        host, once every balancer took it (each at a poll where ``guard`` agreed; then the park is confirmed)."""
        key = (backend, server)
        if not await self.gate.park(backend, server, parked, guard) or not await self.balancers_took([key]):
            return False
        if parked:
            self.gate.confirm_park(key)
        return True

    async def balancers_took(self, keys: list[ServerKey]) -> bool:
        """On a node host, wait until every balancer that asks its host agent took these servers' states
        (False when one did not within a few agent intervals); elsewhere HAProxy was told at once: True."""
        return self.host_agent is None or await self.host_agent.wait_settled(keys)

    async def servers(self) -> list[ServerStatus]:
        """HAProxy's view of every server; ``OSError`` when it cannot be asked."""
        if not isinstance(self.traffic, HAProxyTraffic):
            raise OSError("no HAProxy runtime API to ask")
        return await self.traffic.servers()

    async def node_traffic(self, node: str) -> Traffic:
        """Requests on ``node``'s parts (in flight, so far); ``OSError`` when unknown."""
        if self.traffic is None:
            raise OSError("no HAProxy runtime API and no host agent: nothing counts the requests")
        return await self.traffic.node_traffic(node)

    async def sticky_traffic(self, node: str) -> Traffic:
        """UI requests that carry ``node``'s persistence cookie (in flight, so far); ``OSError`` when unknown."""
        if self.traffic is None:
            raise OSError("no HAProxy runtime API and no host agent: nothing counts the requests")
        return await self.traffic.sticky_traffic(node)

    async def server_states(self, node: str, states: set[str], parts: tuple[str, ...]) -> bool:
        """Whether the balancers have every server of ``node``'s ``parts`` in one of ``states``."""
        return self.traffic is not None and await self.traffic.server_states(node, states, parts)

    def reachable_web_fronts(self) -> list[str]:
        """Every web front of the cluster that a node host can ask for its counts: not one on a loopback
        address, which only its own host reaches; with mutual TLS only this host's own (another host's parts
        trust the balancers and their own sidecar, not this one: ``balancer.part_tls``)."""
        own = {node.name for node in self.spec.nodes_on(self.node_host.name)} if self.node_host else set()
        return [self.spec.part_url(node, node.web) for node in self.spec.nodes
                if node.web is not None and not ipaddress.ip_address(node.web.host).is_loopback
                and (self.tls is None or node.name in own)]

    def _host_probe_tls(self) -> ProbeTLS | None:
        """With mutual TLS, how this node host's sidecar reaches its parts (they all serve its certificate)."""
        if self.tls is None or self.node_host is None:
            return None
        names = {node.tls_name() for node in self.spec.nodes_on(self.node_host.name)}
        return self.tls.probe(names.pop() if len(names) == 1 else self.node_host.name)

    def start_rolling_restart(self, body: object) -> dict:
        """Start a rolling restart (``POST /rolling-restart``): its report; ``OperationError`` when it cannot."""
        request = parse_request(body)
        if self.traffic is None:
            raise OperationError("no HAProxy runtime API and no host agent: a rolling restart waits on the "
                                 "requests in flight, which nothing here counts")
        if request.model or request.lora:
            fixed = [node.name for node in self.spec.nodes
                     if node.managed and node.worker is not None and node.worker.command]
            if fixed:
                raise OperationError(f"workers {fixed} run their own command: --model/--lora cannot change it")
        operation = RollingRestart(self, request, ready_timeout=self.settings.start_timeout)
        return self.operations.start("rolling-restart", operation.run).document()

    def operation(self) -> dict | None:
        """The report of the running or last operation (``GET /operation``)."""
        return self.operations.last.document() if self.operations.last is not None else None

    async def haproxy_view(self) -> HAProxyView | None:
        """HAProxy's view of servers and queues; None when it does not answer within ``VIEW_TIMEOUT``."""
        if self.view_api is None:
            return None
        try:
            return HAProxyView.from_stat(await self.view_api.show_stat())
        except (OSError, RuntimeAPIError):  # OSError includes TimeoutError
            return None

    def request_stop(self, signum: int | None = None) -> None:
        """Begin a graceful shutdown (signal handler)."""
        if not self.stopping.is_set():
            name = signal.Signals(signum).name if signum else "request"
            logger.info("shutting down (%s): draining and stopping %d processes", name, len(self.supervisors))
        self.stopping.set()
        for stop in self.node_stops.values():
            stop.set()

    async def run(self) -> None:
        """Supervise until SIGINT/SIGTERM (or ``request_stop``), then stop every process.

        ``StartFailed`` when HAProxy's first start failed (nothing else was started then).
        """
        if self.host_agent is not None:
            await self.host_agent.start()  # first: an address it cannot bind is an error before anything started
        loop = asyncio.get_running_loop()
        for signum in STOP_SIGNALS:
            loop.add_signal_handler(signum, self.request_stop, signum)
        retry_auth = BasicAuth(self.spec.stats.user, self.spec.stats.password)
        haproxy_status = self.balancer.status if self.balancer is not None else None
        config = uvicorn.Config(
            status_app(self.statuses, self.metrics, self.retry, retry_auth, haproxy_status,
                       drain=self.drain, view=self.haproxy_view,
                       operations=OperationRoutes(self.start_rolling_restart, self.operation,
                                                 self.start_add_node, self.start_remove_node),
                       floating=self.floating,
                       allowed_hosts=listener_hosts(self.settings.host, self.settings.port)),
            host=self.settings.host,
            port=self.settings.port,
            log_level="warning",
            lifespan="off",
        )
        server = _EmbeddedServer(config)
        server_task = asyncio.create_task(server.serve())
        try:
            await self._supervise()
        finally:
            await self.operations.aclose()
            if self.traffic is not None:
                await self.traffic.aclose()
            server.should_exit = True
            await server_task
            if self.host_agent is not None:
                await self.host_agent.aclose()
            for signum in STOP_SIGNALS:
                loop.remove_signal_handler(signum)
        logger.info("all processes stopped")

    async def _supervise(self) -> None:
        """HAProxy first, then the node parts until they stop; HAProxy stops last."""
        if self.balancer is None:
            await self._supervise_nodes(None)
            return
        balancer_stopping = asyncio.Event()
        balancer = asyncio.create_task(self.balancer.run(balancer_stopping))
        try:
            await self._until_started(balancer)
            await self._supervise_nodes(balancer)
        finally:
            balancer_stopping.set()
            if not balancer.done():
                await balancer

    async def _until_started(self, balancer: asyncio.Task) -> None:
        """Wait for HAProxy's first start; raise why it failed."""
        assert self.balancer is not None
        started = asyncio.create_task(self.balancer.started.wait())
        try:
            await asyncio.wait({started, balancer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            started.cancel()
        if balancer.done():
            balancer.result()

    async def _supervise_nodes(self, balancer: asyncio.Task | None) -> None:
        """Run every node part's supervisor until they all stopped; stop them all if one (or HAProxy's) fails."""
        companions = [asyncio.create_task(supervisor.run(self.stopping)) for supervisor in self.companions]
        for node in self.managed_nodes():
            self._start_tasks(node, self.parts_of(node))
        tasks = [*companions, *(task for node_tasks in self.tasks.values() for task in node_tasks)]
        nodes = asyncio.create_task(self._until_stopped(tasks))
        try:
            if balancer is not None:
                await asyncio.wait({nodes, balancer}, return_when=asyncio.FIRST_COMPLETED)
                if balancer.done():
                    balancer.result()  # before the nodes stopped, HAProxy's supervisor can only have failed
            await nodes
        except Exception:
            logger.exception("a supervisor failed; stopping everything")
            self.request_stop()
            await asyncio.gather(nodes, *tasks, return_exceptions=True)
            raise

    async def _until_stopped(self, tasks: list[asyncio.Task]) -> None:
        await asyncio.gather(*tasks)
        await self.stopping.wait()
        await asyncio.gather(*(task for node_tasks in self.tasks.values() for task in node_tasks))  # added ones


def configure_logging() -> None:
    """Plain timestamped logs on stderr; no per-probe lines from httpx."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
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
        api = None if args.no_haproxy or node_host else AsyncRuntimeAPI(spec.socket_path)
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
