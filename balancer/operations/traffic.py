"""How busy a node is and whether the balancers took its state: what an operation waits on, two ways.

A rolling restart (``balancer.operations.rolling``) waits until a drained node has no request in flight,
until no request stuck to it (its persistence cookie) is in flight anywhere, and until the
balancers have its servers in the state it was given. The balancer host's sidecar asks its HAProxy
(``HAProxyTraffic``: ``show stat``, the sticky table), and a web front itself how busy it is: HAProxy
counts the event streams a page (or anyone with its cookie) keeps open with no job behind them, which
would hold a drained web front forever; the web front counts its jobs (``webui.traffic``). A node
host's sidecar has no HAProxy, so it
asks the parts themselves (``PartTraffic``: each part's ``GET /traffic``, ``webui.traffic``; the
sticky requests of every web front of the cluster it can reach) and its host agent, which knows
what it last told each balancer (``HostAgent.settled``). With mutual TLS the parts are asked as the
sidecar's probes ask them (``balancer.multihost.part_tls``), which only this host's parts accept.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Protocol

import httpx

from balancer.haproxy.config import STICKY_TABLE
from balancer.haproxy.gate import HAProxyGate
from balancer.haproxy.runtime_api import AsyncRuntimeAPI
from balancer.haproxy.runtime_protocol import RuntimeAPIError, ServerState, ServerStatus
from balancer.multihost.host_agent import HostAgent
from balancer.operations.node_control import Traffic
from balancer.supervision.part_probe import ProbeTLS, part_client
from balancer.supervision.supervisor import ProcessSupervisor
from webui.contract import TRAFFIC_PATH

PartsOf = Callable[[str], "list[ProcessSupervisor]"]
"""Node -> the supervisors of its parts (``Sidecar.parts_of``)."""
STATUS_STATES: dict[str, ServerState] = {"UP": "ready", "DRAIN": "drain", "MAINT": "maint"}
"""HAProxy's server status -> the state a host agent tells for it."""


class TrafficSource(Protocol):
    """What an operation asks about a node (``NodeControl`` hands it on)."""

    async def node_traffic(self, node: str, parts: tuple[str, ...] = ("web", "worker")) -> Traffic:
        """Requests on the node's ``parts`` (``OSError`` when unknown)."""

    async def sticky_traffic(self, node: str) -> Traffic:
        """UI requests whose client is stuck to ``node``, wherever they are (``OSError`` when unknown)."""

    async def server_states(self, node: str, states: set[str], parts: tuple[str, ...]) -> bool:
        """Whether the balancers have every server of ``node``'s ``parts`` in one of ``states`` (UP, DRAIN)."""

    async def aclose(self) -> None:
        """Release what it holds."""


class PartCounts:
    """Asks parts for their own counts (``GET /traffic``), as the sidecar's probes ask them."""

    def __init__(self, timeout: float, probe_tls: ProbeTLS | None = None) -> None:
        self.client = part_client(timeout, probe_tls)
        self.extensions = probe_tls.extensions if probe_tls is not None else {}

    async def counts(self, url: str) -> dict:
        """One part's ``GET /traffic``; ``OSError`` when it does not answer."""
        try:
            response = await self.client.get(url + TRAFFIC_PATH, extensions=self.extensions)
            response.raise_for_status()
            counts = response.json()
            if not all(isinstance(counts.get(key), int) for key in ("in_flight", "total")):
                raise ValueError("no request counts in the answer")
            return counts
        except (httpx.HTTPError, ValueError, AttributeError) as exc:
            raise OSError(f"{url}{TRAFFIC_PATH}: {exc or type(exc).__name__}") from exc

    async def traffic(self, urls: list[str]) -> Traffic:
        """What the parts at ``urls`` count together (``OSError`` when one does not answer)."""
        found = [await self.counts(url) for url in urls]
        routes = tuple(f"{count} {route} on {url}" for url, counts in zip(urls, found, strict=True)
                       if isinstance(counts.get("routes"), dict)
                       for route, count in counts["routes"].items() if isinstance(count, int) and count > 0)
        return Traffic(sum(c["in_flight"] for c in found), sum(c["total"] for c in found), routes)

    async def aclose(self) -> None:
        await self.client.aclose()


class HAProxyTraffic:
    """This host's HAProxy's view, and its web fronts' own counts (the balancer host's sidecar)."""

    def __init__(self, api: AsyncRuntimeAPI, parts_of: PartsOf, parts: PartCounts) -> None:
        self.api = api
        self.parts_of = parts_of
        self.parts = parts

    async def servers(self) -> list[ServerStatus]:
        """HAProxy's view of every server; ``OSError`` when it cannot be asked."""
        try:
            return await self.api.servers()
        except RuntimeAPIError as exc:
            raise OSError(str(exc)) from exc

    async def node_traffic(self, node: str, parts: tuple[str, ...] = ("web", "worker")) -> Traffic:
        """HAProxy's ``scur`` + ``qcur`` and ``stot`` of the node's worker server (not the web fronts' probes,
        which a drained worker does not fail), and its web front's own count (jobs, requests that end); a web
        front that gives none (an older version) by HAProxy's count too."""
        counted, backends = Traffic(0, 0), set()
        for supervisor in (s for s in self.parts_of(node) if s.status.part in parts):
            if supervisor.status.part == "web":
                with contextlib.suppress(OSError):
                    own = await self.parts.traffic([supervisor.status.url])
                    counted = Traffic(counted.in_flight + own.in_flight, counted.total + own.total,
                                      counted.routes + own.routes)
                    continue
            backends.add(supervisor.status.backend)
        mine = [s for s in await self.servers() if s.server == node and s.backend in backends]
        return Traffic(sum(s.current_sessions + s.queued for s in mine) + counted.in_flight,
                       sum(s.total_sessions for s in mine) + counted.total, counted.routes)

    async def sticky_traffic(self, node: str) -> Traffic:
        """The sticky table's entry for ``node``'s cookie value (in flight, so far)."""
        try:
            entry = (await self.api.show_table(STICKY_TABLE)).get(node, {})
        except RuntimeAPIError as exc:
            raise OSError(str(exc)) from exc
        return Traffic(int(entry.get("conn_cur", 0)), int(entry.get("http_req_cnt", 0)))

    async def server_states(self, node: str, states: set[str], parts: tuple[str, ...]) -> bool:
        backends = {s.status.backend for s in self.parts_of(node) if s.status.part in parts}
        try:
            servers = [s for s in await self.servers() if s.server == node and s.backend in backends]
        except OSError:
            return False
        # A worker with a dispatch agent reports "DRAIN (agent)", "UP (agent)": the same states.
        return len(servers) == len(backends) and all(server.status.removesuffix(" (agent)") in states
                                                     for server in servers)

    async def aclose(self) -> None:
        """The parts' client (the runtime API connects per command)."""
        await self.parts.aclose()


class PartTraffic:
    """The parts' own counters and the host agent's word (a node host's sidecar)."""

    def __init__(self, parts_of: PartsOf, web_urls: Callable[[], list[str]], agent: HostAgent, gate: HAProxyGate,
                 timeout: float, probe_tls: ProbeTLS | None = None) -> None:
        self.parts_of = parts_of
        self.web_urls = web_urls
        """Every web front of the cluster this sidecar can ask (on any host without TLS; with it, its own):
        sticky clients go to another one while theirs is out."""
        self.agent = agent
        self.gate = gate
        self.parts = PartCounts(timeout, probe_tls)

    async def node_traffic(self, node: str, parts: tuple[str, ...] = ("web", "worker")) -> Traffic:
        """The requests ``node``'s ``parts`` count (a part that does not answer: unknown, ``OSError``)."""
        return await self.parts.traffic([s.status.url for s in self.parts_of(node) if s.status.part in parts])

    async def sticky_traffic(self, node: str) -> Traffic:
        """The requests stuck to ``node`` that every web front of the cluster counts."""
        found = [(await self.parts.counts(url))["sticky"].get(node, {}) for url in self.web_urls()]
        return Traffic(sum(c.get("in_flight", 0) for c in found), sum(c.get("total", 0) for c in found))

    async def server_states(self, node: str, states: set[str], parts: tuple[str, ...]) -> bool:
        """Whether each server's state is one of ``states`` and every balancer that asks was told it (HAProxy
        then has it: a server leaving ``maint`` is UP at once, its health checks go on deciding)."""
        wanted = {STATUS_STATES[status] for status in states}
        keys = [(s.status.backend, node) for s in self.parts_of(node) if s.status.part in parts and s.status.backend]
        return all(self.gate.effective(key) in wanted and self.agent.settled(key) for key in keys)

    async def aclose(self) -> None:
        await self.parts.aclose()
