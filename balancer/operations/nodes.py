"""The managed nodes on this host, what operations act through: their servers in HAProxy, nodes coming and going.

``ManagedNodes`` is the ``NodeControl`` an operation acts through (``balancer.operations.rolling``,
``balancer.operations.node_changes``); its parts' supervisors run as ``SupervisedNodes``
(``balancer.operations.supervised_nodes``) with a stop event and tasks per node, so nodes are added and removed
at runtime (their servers added to, deleted from HAProxy over its runtime API, haproxy.cfg re-rendered with the
current nodes for an HAProxy restart). An operator's drain of a node (``POST /drain/NODE``, ``HAProxyGate.hold``)
keeps its servers in ``drain`` whatever their supervisors say, until ``ready``.

On a node host there is no HAProxy here: the host agent (``balancer.multihost.host_agent``) tells every
balancer's HAProxy each part's state, the one ``HAProxyGate.effective`` computes, and operations count
requests on the parts themselves (``PartTraffic``).
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging

from balancer.config.cluster import ClusterSpec
from balancer.config.nodes import NodeHostSpec, NodeSpec
from balancer.haproxy.config import PART_BACKENDS, StaticServers, render_config
from balancer.haproxy.gate import ParkGuard, ServerKey
from balancer.haproxy.process import write_config
from balancer.haproxy.runtime_api import AsyncRuntimeAPI
from balancer.haproxy.runtime_protocol import RuntimeAPIError, ServerState, ServerStatus
from balancer.multihost.host_agent import HostAgent
from balancer.operations.new_node import new_node_spec
from balancer.operations.node_control import Traffic
from balancer.operations.parts import PartFactory, part_command, replace_flag
from balancer.operations.supervised_nodes import SupervisedNodes
from balancer.operations.traffic import HAProxyTraffic, PartCounts, PartTraffic, TrafficSource
from balancer.supervision.children import NodeProcess
from balancer.supervision.part_probe import ProbeTLS

logger = logging.getLogger(__name__)


class ManagedNodes(SupervisedNodes):
    """The managed nodes of this host and their parts' supervisors; what operations act through."""

    def __init__(self, spec: ClusterSpec, factory: PartFactory, node_host: NodeHostSpec | None = None,
                 nodes: list[NodeSpec] | None = None, view_api: AsyncRuntimeAPI | None = None,
                 renders_config: bool = False) -> None:
        self.spec = spec
        self.node_host = node_host
        """The node host these nodes are on (its host agent runs here); None: the balancer host's local nodes.
        ``nodes``, when given, are the nodes to run instead (none on a balancer-only host)."""
        self.gate, self.tls, self.settings = factory.gate, factory.tls, spec.sidecar
        self.view_api = view_api
        """This host's HAProxy's runtime API for reading (short timeout), when there is one."""
        self.renders_config = renders_config
        """Whether haproxy.cfg is re-rendered when nodes come and go (the sidecar runs HAProxy)."""
        self.names_in_haproxy: set[str] = set()
        """Removed nodes whose servers HAProxy still has (kept in ``maint``, or not deleted): not given again."""
        super().__init__(factory, spec.nodes_on(node_host.name if node_host else None) if nodes is None else nodes)
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

    def next_node(self, gpu: int | None) -> NodeSpec:
        """A new local node like the first managed one, on GPU ``gpu`` (``new_node_spec``): no name that HAProxy
        still has. ``OperationError`` when there is no node to copy."""
        return new_node_spec(self.spec, self.names_in_haproxy, gpu)

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
        self.start_parts(node)
        logger.warning("%s: added at runtime (not written back to the cluster file)", node.name)

    async def stop_node(self, node: str) -> list[str]:
        """Stop ``node``'s processes, delete its servers and forget it; re-render haproxy.cfg. The servers left in
        ``maint`` instead (HAProxy 2.8 deletes no server that a haproxy.cfg ``track`` points to: a worker of the
        cluster file; gone at HAProxy's next start); ``OSError`` when HAProxy did not delete a server for
        another reason (the node is forgotten all the same)."""
        await self.stop_parts(node)
        spec = next(entry for entry in self.spec.nodes if entry.name == node)
        self.spec.nodes.remove(spec)
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
