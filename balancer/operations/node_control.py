"""What an operation acts through: the sidecar's nodes (``NodeControl``, ``balancer.operations.nodes``) and
the requests they count (``Traffic``, ``balancer.operations.traffic``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from balancer.haproxy.gate import ParkGuard
from balancer.supervision.supervisor import ProcessSupervisor


@dataclass(frozen=True)
class Traffic:
    """Requests seen by HAProxy for one node (or one cookie value): in flight now, and ever."""

    in_flight: int
    """Requests in flight or queued right now."""
    total: int
    """Requests so far (only grows): a change between two looks means one came and went."""
    routes: tuple[str, ...] = ()
    """What is in flight, where the parts name it (``METHOD /path`` by part); HAProxy's counts do not."""


class NodeControl(Protocol):
    """What an operation needs of the sidecar."""

    def managed_nodes(self) -> list[str]:
        """Names of the managed nodes, in the cluster file's order."""

    def parts_of(self, node: str) -> list[ProcessSupervisor]:
        """The supervisors of a node's parts."""

    def configure_worker(self, node: str, model: str | None, lora: str | None) -> None:
        """Change a worker's ``--model`` / ``--lora`` for its next start (in the cluster spec)."""

    async def drain(self, node: str, drained: bool) -> dict | None:
        """An operator's drain of a node, or its end (``Sidecar.drain``)."""

    async def park(self, backend: str, server: str, parked: bool, guard: ParkGuard | None = None) -> bool:
        """Keep a server in ``maint`` whatever its supervisor says (``HAProxyGate.park``), or stop; on a node host
        each balancer is told at a poll where ``guard`` agrees."""

    @property
    def switches_guarded(self) -> bool:
        """Whether ``park`` heeds its guard (a node host's balancers poll for it); else HAProxy is told at once."""

    async def node_traffic(self, node: str, parts: tuple[str, ...] = ("web", "worker")) -> Traffic:
        """Requests on the node's ``parts`` (``OSError`` when unknown; ``balancer.operations.traffic``)."""

    async def sticky_traffic(self, node: str) -> Traffic:
        """UI requests that carry ``node``'s persistence cookie (``OSError`` when unknown)."""

    async def server_states(self, node: str, states: set[str], parts: tuple[str, ...]) -> bool:
        """Whether the balancers have every server of ``node``'s ``parts`` in one of ``states`` (UP, DRAIN)."""

