"""The managed nodes on this host: their supervisors, their servers in HAProxy, and what operations do to them.

``ManagedNodes`` is the ``NodeControl`` an operation acts through (``balancer.operations.rolling``,
``balancer.operations.node_changes``): each node's supervisors have their own stop event and tasks, so
nodes are added and removed at runtime (their servers added to, deleted from HAProxy over its runtime
API, haproxy.cfg re-rendered with the current nodes for an HAProxy restart). An operator's drain of a
node (``POST /drain/NODE``, ``HAProxyGate.hold``) keeps its servers in ``drain`` whatever their
supervisors say, until ``ready``.

On a node host there is no HAProxy here: the host agent (``balancer.multihost.host_agent``) tells every
balancer's HAProxy each part's state, the one ``HAProxyGate.effective`` computes, and operations count
requests on the parts themselves (``PartTraffic``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from collections.abc import Iterator
from itertools import chain, islice

from balancer.config.cluster import ClusterSpec
from balancer.config.loading import DISPATCH_AGENT_PORT_OFFSET
from balancer.config.nodes import NodeHostSpec, NodeSpec
from balancer.config.sections import LOOPBACK
from balancer.haproxy.config import PART_BACKENDS, StaticServers, render_config
from balancer.haproxy.gate import ParkGuard, ServerKey
from balancer.haproxy.process import write_config
from balancer.haproxy.runtime_api import AsyncRuntimeAPI, RuntimeAPIError, ServerState, ServerStatus
from balancer.multihost.host_agent import HostAgent
from balancer.operations.parts import PartFactory, part_command, replace_flag
from balancer.operations.rolling import OperationError, Traffic
from balancer.operations.traffic import HAProxyTraffic, PartCounts, PartTraffic, TrafficSource
from balancer.supervision.children import NodeProcess, ProbeTLS
from balancer.supervision.state import PartStatus
from balancer.supervision.supervisor import ProcessSupervisor

logger = logging.getLogger(__name__)

PORT_SEARCH = 200
"""Ports ``next_free_port`` tries before it gives up."""
LOWEST_PORT = 1024
"""Where the search goes on after 65535: ports below this need privileges."""


def candidate_ports(first: int) -> Iterator[int]:
    """``PORT_SEARCH`` ports from ``first`` on, going on from ``LOWEST_PORT`` past 65535 (a node on port 65400
    still gets a dispatch agent port 1,000 above it)."""
    start = LOWEST_PORT + (first - LOWEST_PORT) % (65536 - LOWEST_PORT) if first > 65535 else max(first, LOWEST_PORT)
    return islice(chain(range(start, 65536), range(LOWEST_PORT, start)), PORT_SEARCH)


def next_free_port(first: int, taken: set[int]) -> int:
    """The first of ``candidate_ports(first)`` that is not ``taken`` and that nothing on this host listens on
    (a bind on loopback: instant, no network I/O); ``OperationError`` when none is."""
    for port in candidate_ports(first):
        if port in taken:
            continue
        with socket.socket() as probe:
            try:
                probe.bind((LOOPBACK, port))
            except OSError:
                continue
        return port
    raise OperationError(f"no free port among the {PORT_SEARCH} tried from {first}")


class ManagedNodes:
    """The managed nodes of this host and their parts' supervisors; what operations act through."""

    def __init__(self, spec: ClusterSpec, factory: PartFactory, node_host: NodeHostSpec | None = None,
                 nodes: list[NodeSpec] | None = None, view_api: AsyncRuntimeAPI | None = None,
                 renders_config: bool = False) -> None:
        self.spec = spec
        self.node_host = node_host
        """The node host these nodes are on (its host agent runs here); None: the balancer host's local nodes.
        ``nodes``, when given, are the nodes to run instead (none on a balancer-only host)."""
        self.factory = factory
        self.gate, self.tls, self.settings = factory.gate, factory.tls, spec.sidecar
        self.view_api = view_api
        """This host's HAProxy's runtime API for reading (short timeout), when there is one."""
        self.renders_config = renders_config
        """Whether haproxy.cfg is re-rendered when nodes come and go (the sidecar runs HAProxy)."""
        self.stopping = asyncio.Event()
        self.node_stops: dict[str, asyncio.Event] = {}
        """Each node's own stop (``remove_node``); all set on shutdown."""
        self.names_in_haproxy: set[str] = set()
        """Removed nodes whose servers HAProxy still has (kept in ``maint``, or not deleted): not given again."""
        self.tasks: dict[str, list[asyncio.Task]] = {}
        """The supervisors' tasks of each node."""
        self.supervisors = [
            factory.node_part(node, kind, part)
            for node in (spec.nodes_on(node_host.name if node_host else None) if nodes is None else nodes)
            for kind, part in (("worker", node.worker), ("web", node.web))
            if part is not None
        ]
        """One per managed node part."""
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

    def managed_nodes(self) -> list[str]:
        """Names of the managed nodes, in the cluster file's order."""
        return list(dict.fromkeys(supervisor.status.node for supervisor in self.supervisors))

    def parts_of(self, node: str) -> list[ProcessSupervisor]:
        """The supervisors of a node's parts."""
        return [supervisor for supervisor in self.supervisors if supervisor.status.node == node]

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
        supervisors = [self.factory.node_part(node, kind, part)
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
        if self.renders_config:
            write_config(render_config(self.spec), self.spec.config_path)

    def _start_tasks(self, node: str, supervisors: list[ProcessSupervisor]) -> None:
        stop = self.node_stops.setdefault(node, asyncio.Event())
        if self.stopping.is_set():
            stop.set()
        self.tasks.setdefault(node, []).extend(asyncio.create_task(s.run(stop)) for s in supervisors)

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
        self.gate.confirm_park(key)
        return True

    @property
    def switches_guarded(self) -> bool:
        """On a node host each balancer takes a park or unpark at a poll where its guard agrees."""
        return self.gate.pulled

    async def balancers_took(self, keys: list[ServerKey]) -> bool:
        """On a node host, wait until every balancer that asks its host agent took these servers' states
        (False when one did not within a few agent intervals); elsewhere HAProxy was told at once: True."""
        return self.host_agent is None or await self.host_agent.wait_settled(keys)

    async def servers(self) -> list[ServerStatus]:
        """HAProxy's view of every server; ``OSError`` when it cannot be asked."""
        if not isinstance(self.traffic, HAProxyTraffic):
            raise OSError("no HAProxy runtime API to ask")
        return await self.traffic.servers()

    async def node_traffic(self, node: str, parts: tuple[str, ...] = ("web", "worker")) -> Traffic:
        """Requests on ``node``'s ``parts`` (in flight, so far); ``OSError`` when unknown."""
        if self.traffic is None:
            raise OSError("no HAProxy runtime API and no host agent: nothing counts the requests")
        return await self.traffic.node_traffic(node, parts)

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
        trust the balancers and their own sidecar, not this one: ``balancer.multihost.part_tls``)."""
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

    def stop(self) -> None:
        """Stop every node (a shutdown): each node's own stop, and those of nodes added later."""
        self.stopping.set()
        for stop in self.node_stops.values():
            stop.set()

    async def supervise(self, balancer: ProcessSupervisor | None, companions: list[ProcessSupervisor]) -> None:
        """HAProxy first (``balancer``, when this host runs it), then the node parts and ``companions`` until they
        stop; HAProxy stops last. ``StartFailed`` when HAProxy's first start failed (nothing else was started then)."""
        if balancer is None:
            await self._supervise_nodes(companions, None)
            return
        balancer_stopping = asyncio.Event()
        task = asyncio.create_task(balancer.run(balancer_stopping))
        try:
            await self._until_started(balancer, task)
            await self._supervise_nodes(companions, task)
        finally:
            balancer_stopping.set()
            if not task.done():
                await task

    @staticmethod
    async def _until_started(balancer: ProcessSupervisor, task: asyncio.Task) -> None:
        """Wait for HAProxy's first start; raise why it failed."""
        started = asyncio.create_task(balancer.started.wait())
        try:
            await asyncio.wait({started, task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            started.cancel()
        if task.done():
            task.result()

    async def _supervise_nodes(self, companions: list[ProcessSupervisor], balancer: asyncio.Task | None) -> None:
        """Run every node part's supervisor (and the ``companions``) until they all stopped; stop them all if one
        (or HAProxy's, ``balancer``) fails."""
        companions = [asyncio.create_task(supervisor.run(self.stopping)) for supervisor in companions]
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
            self.stop()
            await asyncio.gather(nodes, *tasks, return_exceptions=True)
            raise

    async def _until_stopped(self, tasks: list[asyncio.Task]) -> None:
        await asyncio.gather(*tasks)
        await self.stopping.wait()
        await asyncio.gather(*(task for node_tasks in self.tasks.values() for task in node_tasks))  # added ones
