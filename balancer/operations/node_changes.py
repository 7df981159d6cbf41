"""Growing and shrinking the cluster at runtime, without restarting HAProxy: ``AddNode`` and ``RemoveNode``.

``AddNode`` gives the new node the next free name and ports of the cluster's scheme (web front and
worker one above the highest in use, a dispatch agent 1000 above its worker when the others have
one), the other nodes' worker and web flags, and ``--gpu G`` like ``gpu:`` in the cluster file. Its
servers are added over HAProxy's runtime API in ``maint`` (with the options of a haproxy.cfg line:
cookie, checks, agent; ``balancer.haproxy.servers.StaticServers.dynamic_servers``), its processes start under
their supervisors, and their servers go into rotation once ready (the supervisors tell HAProxy).

``RemoveNode`` drains the node, waits for its requests in flight exactly as the rolling restart does
(``balancer.operations.waiting.QuietSwitch``: quiet for ``settle`` seconds, web front parked in ``maint``),
stops its processes and deletes its servers.

Neither writes the cluster file: ``launch.py``'s next start runs the nodes its flags and file say.
The sidecar re-renders haproxy.cfg with the current nodes, so an HAProxy it restarts has them.
"""

from __future__ import annotations

from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field

from balancer.config.nodes import NodeSpec
from balancer.haproxy.runtime_protocol import ServerStatus
from balancer.operations.node_control import NodeControl
from balancer.operations.runner import OperationReport
from balancer.operations.waiting import NodeFailed, QuietSwitch, wait_for


class AddNodeRequest(BaseModel):
    """What ``POST /add-node`` takes (a JSON object; every field optional)."""

    model_config = ConfigDict(extra="forbid")

    gpu: int | None = Field(None, ge=0, le=1023, description="The new worker's GPU (NVML index); unset: none.")
    ready_timeout: float | None = Field(None, gt=0, le=7200,
                                        description="Seconds the new node may take to be ready "
                                        "(default: the sidecar's start_timeout).")


class RemoveNodeRequest(BaseModel):
    """What ``POST /remove-node/NODE`` takes (a JSON object; every field optional)."""

    model_config = ConfigDict(extra="forbid")

    drain_timeout: float = Field(300.0, gt=0, le=3600,
                                 description="Seconds the drained node may take to have no request in flight.")
    settle: float = Field(1.0, ge=0, le=60,
                          description="Seconds the drained node must have no request in flight before it stops.")


class NodeSet(NodeControl, Protocol):
    """What adding and removing nodes needs of the sidecar, beyond an operation's ``NodeControl``."""

    async def start_node(self, node: NodeSpec) -> None:
        """Add the node's servers to HAProxy (``maint``) and start its supervisors; ``OSError`` when
        HAProxy refused its servers (nothing started then)."""

    async def servers(self) -> list[ServerStatus]:
        """HAProxy's view of every server (``OSError`` when it does not answer)."""

    async def stop_node(self, node: str) -> list[str]:
        """Stop the node's processes, delete its servers and forget it: why a server was left in ``maint``
        instead; ``OSError`` when HAProxy did not delete its servers (its processes are stopped all the same)."""


class AddNode:
    """Starts one more node and waits until HAProxy has it in rotation."""

    def __init__(self, nodes: NodeSet, node: NodeSpec, ready_timeout: float) -> None:
        self.nodes = nodes
        self.node = node
        self.ready_timeout = ready_timeout

    async def run(self, report: OperationReport) -> None:
        """Add, start, wait until ready and UP."""
        name = self.node.name
        ports = {part: spec.port for part, spec in (("web", self.node.web), ("worker", self.node.worker)) if spec}
        gpu = self.node.worker.gpu if self.node.worker else None
        report.nodes[name] = {"added": False, "ports": ports, "gpu": gpu}
        report.log(name, f"adding: ports {ports}" + (f", GPU {gpu}" if gpu is not None else ""))
        try:
            await self.nodes.start_node(self.node)
        except OSError as exc:
            report.finish(f"{name}: HAProxy did not take its servers: {exc}; not started")
            return
        report.log(name, "servers added in maint, processes started; waiting until ready")
        parts = self.nodes.parts_of(name)
        try:
            await wait_for(lambda: all(s.status.state.value == "ready" for s in parts), self.ready_timeout,
                           f"not ready within {self.ready_timeout:g} s (see its log); left to its supervisor")
            await wait_for(lambda: self.nodes.server_states(name, {"UP"}, ("web", "worker")), self.ready_timeout,
                           "ready, but HAProxy's health checks did not pass")
        except NodeFailed as exc:
            report.finish(f"{name}: {exc} (HAProxy: {await self.server_summary()})")
            return
        report.nodes[name].update(added=True, pids={s.status.part: s.status.pid for s in parts})
        report.log(name, "in rotation")
        report.finish()


    async def server_summary(self) -> str:
        """The new node's servers as HAProxy shows them, e.g. ``webs UP, workers MAINT``."""
        try:
            servers = [s for s in await self.nodes.servers() if s.server == self.node.name]
        except OSError as exc:
            return f"no answer: {exc}"
        return ", ".join(f"{s.backend} {s.status}" for s in servers) or "none of its servers"


class RemoveNode:
    """Drains one node, waits for its requests in flight, stops it and deletes its servers."""

    def __init__(self, nodes: NodeSet, node: str, request: RemoveNodeRequest) -> None:
        self.nodes = nodes
        self.node = node
        self.drain_timeout = request.drain_timeout
        self.quiet = QuietSwitch(nodes, request.drain_timeout, request.settle)

    async def run(self, report: OperationReport) -> None:
        """Drain, wait until quiet (web front parked), stop, delete."""
        node = self.node
        parts = self.nodes.parts_of(node)
        entry = report.nodes.setdefault(node, {"removed": False})
        entry["pids"] = {s.status.part: s.status.pid for s in parts}
        webs = [(s.status.backend, node) for s in parts if s.status.part == "web" and s.status.backend]
        await self.nodes.drain(node, True)
        report.log(node, "drained; waiting for its requests in flight")
        waited = await self.quiet.switch_when_quiet(node, lambda: self.nodes.node_traffic(node, ("web", "worker")),
                                                    webs, True, report)
        if waited is None:
            await self.quiet.park(webs, False)
            await self.nodes.drain(node, False)
            report.finish(f"{node}: still serving requests after {self.drain_timeout:g} s "
                          "(drain_timeout); put back in rotation, not removed")
            return
        entry["drained_s"] = round(waited, 2)
        report.log(node, f"idle after {waited:.1f} s; stopping")
        try:
            kept = await self.nodes.stop_node(node)
        except OSError as exc:
            report.finish(f"{node}: stopped, but HAProxy did not delete its servers: {exc}")
            return
        entry.update(removed=True, kept_in_maint=kept)
        report.log(node, "stopped; its servers deleted" + (f", except (left in maint until HAProxy's next start): "
                                                          f"{'; '.join(kept)}" if kept else ""))
        report.finish()
