"""A part's own count of the HTTP requests it serves: in flight now and so far, in all and per sticky node.

``CountTraffic`` (ASGI middleware, on the worker and the web front) keeps a ``TrafficCounts``;
``GET /traffic`` (``TRAFFIC_PATH``) answers its ``snapshot``::

    {"in_flight": 1, "total": 42, "sticky": {"node1": {"in_flight": 1, "total": 30}}}

``sticky`` counts the requests by the node their client is stuck to: HAProxy copies the value of
its persistence cookie into the ``STICKY_NODE_HEADER`` header (it removes the cookie itself before
the request reaches a node). A node host's sidecar has no HAProxy to ask how busy a part is, so it
asks the parts (``balancer.operations.traffic.PartTraffic``). Probes and the counters' own route are not counted.
"""

from __future__ import annotations

from collections import Counter

from fastapi import FastAPI
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from webui.contract import HEALTH_PATH, METRICS_PATH, READY_PATH, STICKY_NODE_HEADER, TRAFFIC_PATH

UNCOUNTED = frozenset({HEALTH_PATH, READY_PATH, METRICS_PATH, TRAFFIC_PATH})
"""Probes and counters: not the clients' traffic."""
MAX_NODE_NAME = 64
"""Longer header values are not counted as a node (the header comes from HAProxy; a bound all the same)."""
MAX_STICKY_NODES = 256
"""Distinct sticky values counted at most: HAProxy copies the client's cookie, whatever its value, so a client
sending a new one each time must not grow the counts without bound (later new values count as no node)."""


class TrafficCounts:
    """Requests in flight and so far, per sticky node (None: no sticky node)."""

    def __init__(self) -> None:
        self.in_flight: Counter[str | None] = Counter()
        self.totals: Counter[str | None] = Counter()

    def snapshot(self) -> dict:
        """The counts, as ``GET /traffic`` answers them."""
        sticky = {node: {"in_flight": self.in_flight[node], "total": total}
                  for node, total in self.totals.items() if node is not None}
        return {"in_flight": sum(self.in_flight.values()), "total": sum(self.totals.values()), "sticky": sticky}


class CountTraffic:
    """ASGI middleware: counts each HTTP request from its start until its response ended."""

    def __init__(self, app: ASGIApp, counts: TrafficCounts) -> None:
        self.app = app
        self.counts = counts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in UNCOUNTED:
            await self.app(scope, receive, send)
            return
        node = sticky_node(scope)
        if node not in self.counts.totals and len(self.counts.totals) >= MAX_STICKY_NODES:
            node = None
        self.counts.in_flight[node] += 1
        self.counts.totals[node] += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.counts.in_flight[node] -= 1


def sticky_node(scope: Scope) -> str | None:
    """The node a request's client is stuck to (HAProxy's header), if any."""
    wanted = STICKY_NODE_HEADER.lower().encode()
    for name, value in scope.get("headers", ()):
        if name == wanted and 0 < len(value) <= MAX_NODE_NAME:
            return value.decode("latin-1")
    return None


def count_traffic(app: FastAPI) -> TrafficCounts:
    """Count ``app``'s requests and serve the counts at ``TRAFFIC_PATH``; the counts."""
    counts = TrafficCounts()
    app.add_middleware(CountTraffic, counts=counts)

    @app.get(TRAFFIC_PATH, include_in_schema=False)
    async def traffic() -> JSONResponse:
        return JSONResponse(counts.snapshot())

    return counts
