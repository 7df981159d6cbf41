"""A part's own count of the HTTP requests it serves: in flight now and so far, in all and per sticky node.

``CountTraffic`` (ASGI middleware, on the worker and the web front) keeps a ``TrafficCounts``;
``GET /traffic`` (``TRAFFIC_PATH``) answers its ``snapshot``::

    {"in_flight": 1, "total": 42, "sticky": {"node1": {"in_flight": 1, "total": 30}},
     "routes": {"POST /gradio_api/queue/join": 1}}

``routes`` names the requests in flight (method and the path's first segments, bounded): what a rolling restart
that waited in vain says it waited on.

``sticky`` counts the requests by the node their client is stuck to: HAProxy copies the value of
its persistence cookie into the ``STICKY_NODE_HEADER`` header (it removes the cookie itself before
the request reaches a node). A rolling restart waits on these counts (``balancer.operations.traffic``): the
balancer host's sidecar for a web front's ``in_flight``, a node host's sidecar, which has no HAProxy
to ask, for everything. Probes and the counters' own route are not counted.

``in_flight`` is what may not be cut: requests that end by themselves, and the web front's Gradio jobs
(``jobs``: joined and not yet delivered). Gradio's event streams are not in it: a browser keeps its
heartbeat stream open as long as the page is, and anyone may hold a data stream open with no job
behind it; counted, either would hold a drained node forever (its job, if any, is counted in
``jobs``). A data stream is still a sticky client's business (``sticky``); a heartbeat never is.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from fastapi import FastAPI
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from webui.contract import (
    HEALTH_PATH,
    HEARTBEAT_PREFIX,
    METRICS_PATH,
    QUEUE_DATA_PATH,
    READY_PATH,
    STICKY_NODE_HEADER,
    TRAFFIC_PATH,
)

UNCOUNTED = frozenset({HEALTH_PATH, READY_PATH, METRICS_PATH, TRAFFIC_PATH})
"""Probes and counters: not the clients' traffic."""
MAX_NODE_NAME = 64
"""Longer header values are not counted as a node (the header comes from HAProxy; a bound all the same)."""
MAX_STICKY_NODES = 256
"""Distinct sticky values counted at most: HAProxy copies the client's cookie, whatever its value, so a client
sending a new one each time must not grow the counts without bound (later new values count as no node)."""
ROUTE_SEGMENTS = 3
"""A request in flight is named by its method and its path's first segments (no file names, no ids)."""
MAX_ROUTE = 80
"""Characters of a route name at most."""


class TrafficCounts:
    """Requests in flight and so far, per sticky node (None: no sticky node); event streams apart; ``jobs``:
    the part's own jobs in flight (a web front's Gradio events), added to ``in_flight``."""

    def __init__(self, jobs: Callable[[], int] = lambda: 0) -> None:
        self.in_flight: Counter[str | None] = Counter()
        self.totals: Counter[str | None] = Counter()
        self.streams: Counter[str | None] = Counter()
        self.routes: Counter[str] = Counter()
        self.jobs = jobs

    def snapshot(self) -> dict:
        """The counts, as ``GET /traffic`` answers them."""
        sticky = {node: {"in_flight": self.in_flight[node] + self.streams[node], "total": self.totals[node]}
                  for node in self.totals.keys() | self.streams.keys() if node is not None}
        jobs = self.jobs()
        return {"in_flight": sum(self.in_flight.values()) + jobs, "jobs": jobs, "total": sum(self.totals.values()),
                "sticky": sticky, "routes": dict(self.routes)}


class CountTraffic:
    """ASGI middleware: counts each HTTP request from its start until its response ended."""

    def __init__(self, app: ASGIApp, counts: TrafficCounts) -> None:
        self.app = app
        self.counts = counts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path in UNCOUNTED or path.startswith(HEARTBEAT_PREFIX):
            await self.app(scope, receive, send)
            return
        node = sticky_node(scope)
        known = self.counts.totals.keys() | self.counts.streams.keys()
        if node not in known and len(known) >= MAX_STICKY_NODES:
            node = None
        stream = path == QUEUE_DATA_PATH  # a job's results, or nothing: counted for its sticky node only
        in_flight = self.counts.streams if stream else self.counts.in_flight
        in_flight[node] += 1
        route = None if stream else request_route(scope)
        if route is not None:
            self.counts.totals[node] += 1
            self.counts.routes[route] += 1
        try:
            await self.app(scope, receive, send)
        finally:
            in_flight[node] -= 1
            if route is not None:
                self.counts.routes[route] -= 1
                if not self.counts.routes[route]:
                    del self.counts.routes[route]  # only routes in flight are kept: paths are the client's to choose


def request_route(scope: Scope) -> str:
    """``METHOD /first/segments`` of a request (bounded; Gradio's ``/file=...`` paths lose their file name)."""
    named = []
    for segment in scope.get("path", "").split("/")[1:ROUTE_SEGMENTS + 1]:
        named.append(segment.partition("=")[0])
        if "=" in segment:  # what follows is a file's name
            break
    path = "/" + "/".join(named)
    return f"{scope.get('method', '?')} {path}"[:MAX_ROUTE]


def sticky_node(scope: Scope) -> str | None:
    """The node a request's client is stuck to (HAProxy's header), if any."""
    wanted = STICKY_NODE_HEADER.lower().encode()
    for name, value in scope.get("headers", ()):
        if name == wanted and 0 < len(value) <= MAX_NODE_NAME:
            return value.decode("latin-1")
    return None


def count_traffic(app: FastAPI, jobs: Callable[[], int] = lambda: 0) -> TrafficCounts:
    """Count ``app``'s requests (and its ``jobs`` in flight) and serve the counts at ``TRAFFIC_PATH``; the counts."""
    counts = TrafficCounts(jobs)
    app.add_middleware(CountTraffic, counts=counts)

    @app.get(TRAFFIC_PATH, include_in_schema=False)
    async def traffic() -> JSONResponse:
        return JSONResponse(counts.snapshot())

    return counts
