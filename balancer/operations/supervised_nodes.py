"""The supervisors of this host's managed nodes and their tasks: each node has its own stop event and tasks, so
nodes start and stop at runtime (``start_parts``, ``stop_parts``) while ``supervise`` runs them all, HAProxy first
and last, until a shutdown (``stop``)."""

from __future__ import annotations

import asyncio
import logging

from balancer.config.nodes import NodeSpec
from balancer.operations.parts import PartFactory
from balancer.supervision.state import PartStatus
from balancer.supervision.supervisor import ProcessSupervisor

logger = logging.getLogger(__name__)


class SupervisedNodes:
    """The managed nodes' supervisors, one per part, and the tasks that run them."""

    def __init__(self, factory: PartFactory, nodes: list[NodeSpec]) -> None:
        self.factory = factory
        self.stopping = asyncio.Event()
        self.node_stops: dict[str, asyncio.Event] = {}
        """Each node's own stop (``stop_parts``); all set on shutdown."""
        self.tasks: dict[str, list[asyncio.Task]] = {}
        """The supervisors' tasks of each node."""
        self.supervisors = [supervisor for node in nodes for supervisor in self._node_parts(node)]
        """One per managed node part."""

    def _node_parts(self, node: NodeSpec) -> list[ProcessSupervisor]:
        """A supervisor for each part of ``node``, worker first."""
        return [self.factory.node_part(node, kind, part)
                for kind, part in (("worker", node.worker), ("web", node.web)) if part is not None]

    def statuses(self) -> list[PartStatus]:
        """The status record of every supervised node part."""
        return [supervisor.status for supervisor in self.supervisors]

    def managed_nodes(self) -> list[str]:
        """Names of the managed nodes, in the cluster file's order."""
        return list(dict.fromkeys(supervisor.status.node for supervisor in self.supervisors))

    def parts_of(self, node: str) -> list[ProcessSupervisor]:
        """The supervisors of a node's parts."""
        return [supervisor for supervisor in self.supervisors if supervisor.status.node == node]

    def start_parts(self, node: NodeSpec) -> None:
        """Supervise a node added at runtime: its parts start now (or stop at once during a shutdown)."""
        supervisors = self._node_parts(node)
        self.supervisors += supervisors
        self._start_tasks(node.name, supervisors)

    async def stop_parts(self, node: str) -> None:
        """Stop a node's processes (its own stop) and forget its supervisors."""
        parts = self.parts_of(node)
        self.node_stops[node].set()
        await asyncio.gather(*self.tasks.pop(node, []), return_exceptions=True)
        self.supervisors = [supervisor for supervisor in self.supervisors if supervisor not in parts]
        del self.node_stops[node]

    def _start_tasks(self, node: str, supervisors: list[ProcessSupervisor]) -> None:
        stop = self.node_stops.setdefault(node, asyncio.Event())
        if self.stopping.is_set():
            stop.set()
        self.tasks.setdefault(node, []).extend(asyncio.create_task(s.run(stop)) for s in supervisors)


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
