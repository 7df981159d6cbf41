"""What the sidecar tells the outside world: ``GET /status`` (JSON), ``GET /metrics``, ``GET /healthz``,
and the actions it takes from outside (HTTP basic auth): ``POST /retry/NODE/PART``, ``POST /drain/NODE``
``POST /ready/NODE``, ``POST /rolling-restart`` (``balancer.operations.rolling``), ``POST /add-node`` and ``POST
/remove-node/NODE`` (``balancer.operations.node_changes``; an operation's progress in ``GET /operation``);
``python -m balancer.cli`` speaks them all; ``GET /operations`` is a page for them (``balancer.api.ops_page``; the
app's ``state.ops_history`` keeps its last hour once the sidecar runs it). An action sent by a browser from another
site is refused (``balancer.api.same_origin``).

``PartStatus`` is the record each supervisor keeps about its process (``balancer.supervision.state``);
``SidecarMetrics`` holds the Prometheus metrics (``balancer.api.metrics``); ``status_app``
serves both over HTTP (the ``/status`` document: ``balancer.api.status``). The read-only routes need no
password (the sidecar listens on loopback by default); the actions need the stats page's user and password.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.authentication import requires
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from balancer.api.basic_auth import OPERATOR, BasicAuth, unauthorized
from balancer.api.haproxy_view import HAProxyView
from balancer.api.host_check import AllowedHosts
from balancer.api.metrics import FloatingView, GpuFacts, SidecarMetrics
from balancer.api.ops_history import SAMPLE_INTERVAL, OpsHistory
from balancer.api.ops_page import operations_routes, sampler
from balancer.api.same_origin import SameOrigin
from balancer.api.status import status_document
from balancer.config.gpus import gpu_facts
from balancer.operations.runner import OperationBusy, OperationError
from balancer.supervision.state import PartStatus


@dataclass(frozen=True)
class OperationRoutes:
    """The sidecar's operations, for ``POST /rolling-restart`` and ``GET /operation``."""

    rolling_restart: Callable[[object], dict]
    """Start one from the request body; its report (``OperationError`` / ``OperationBusy`` when it cannot)."""
    current: Callable[[], dict | None]
    """The running or last operation's report; None before the first."""
    add_node: Callable[[object], dict] | None = None
    """Start adding a node from the request body (``POST /add-node``), like ``rolling_restart``."""
    remove_node: Callable[[str, object], dict] | None = None
    """Start removing a node (``POST /remove-node/NODE``), like ``rolling_restart``."""


def _error(status: int, error: str, detail: str) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail, "fields": []}, status_code=status)


def status_app(
    statuses: Callable[[], list[PartStatus]],
    metrics: SidecarMetrics,
    retry: Callable[[str, str], bool | None],
    auth: BasicAuth,
    haproxy: PartStatus | None = None,
    gpus: Callable[[], GpuFacts] = gpu_facts,
    drain: Callable[[str, bool], Awaitable[dict | None]] | None = None,
    view: Callable[[], Awaitable[HAProxyView | None]] | None = None,
    operations: OperationRoutes | None = None,
    floating: FloatingView | None = None,
    allowed_hosts: frozenset[str] | None = None,
    companions: list[PartStatus] | None = None,
    history_interval: float = SAMPLE_INTERVAL,
) -> Starlette:
    """The sidecar's HTTP app: ``/status``, ``/metrics``, ``/healthz``, ``POST /retry/NODE/PART``
    (try a crash-looped part again once its cause is fixed: 202, 409 if it is not crash-looped,
    404 if there is no such part), ``POST /drain/NODE`` and ``POST /ready/NODE`` (200 with what
    ``drain(node, drained)`` answers; 404 when it answers None: no such node; 502 when HAProxy could
not be told, ``haproxy_told`` false); every action 401
    without ``auth``'s user and password. ``statuses`` are the node parts; ``haproxy`` is HAProxy's,
    when the sidecar supervises it; ``gpus`` reads the GPU facts (blocking: it runs in a worker
    thread, off the event loop); ``view`` reads HAProxy's view of servers and queues (None when
    it cannot). ``POST /rolling-restart`` (JSON body: ``RollingRestartRequest``) starts a rolling
    restart: 202 with its report, 409 while another operation runs, 400 for a bad body; ``GET
    /operation`` is the running or last operation's report (404 before the first). ``floating``: this
    balancer's share of a floating address, in ``/status`` and ``/metrics``. ``allowed_hosts``: the Host
    header values answered (``balancer.api.host_check``; others get 421), None for any. ``companions``: the
    balancer's other supervised processes (the jobs service, keepalived), in ``/status`` and ``/metrics``.
    ``GET /operations``: the operations page (401 without ``auth``'s user and password), its plots sampled every
    ``history_interval`` seconds."""
    metrics.vrrp.floating = floating

    def operation_route(start: Callable[[Request, object], dict] | None,
                        ) -> Callable[[Request], Awaitable[JSONResponse]]:
        @requires(OPERATOR, status_code=401)
        async def start_operation(request: Request) -> JSONResponse:
            if start is None:
                return _error(503, "unavailable", "This sidecar runs no operations.")
            raw = await request.body()
            try:
                body = json.loads(raw) if raw.strip() else None
            except ValueError:
                return _error(400, "invalid_body", "The body must be a JSON object.")
            try:
                return JSONResponse(start(request, body), status_code=202)
            except OperationBusy as exc:
                return _error(409, "busy", str(exc))
            except OperationError as exc:
                return _error(400, "invalid_request", str(exc))

        return start_operation

    ops = operations
    rolling_restart = operation_route(ops and (lambda _, body: ops.rolling_restart(body)))
    add_node = operation_route(ops and ops.add_node and (lambda _, body: ops.add_node(body)))
    remove_node = operation_route(ops and ops.remove_node and (
        lambda request, body: ops.remove_node(request.path_params["node"], body)))

    async def operation(request: Request) -> JSONResponse:
        report = operations.current() if operations is not None else None
        if report is None:
            return _error(404, "not_found", "No operation has run yet.")
        return JSONResponse(report)

    @requires(OPERATOR, status_code=401)
    async def retry_part(request: Request) -> JSONResponse:
        node, part = request.path_params["node"], request.path_params["part"]
        outcome = retry(node, part)
        if outcome is None:
            return JSONResponse({"error": "not_found", "detail": f"No managed part {node}/{part}."}, status_code=404)
        if not outcome:
            return JSONResponse({"error": "not_crash_looped", "detail": f"{node}/{part} is not in a crash loop."},
                                status_code=409)
        return JSONResponse({"status": "retrying", "part": f"{node}/{part}"}, status_code=202)

    def admin_route(action: str, drained: bool) -> Callable[[Request], Awaitable[JSONResponse]]:
        @requires(OPERATOR, status_code=401)
        async def set_admin(request: Request) -> JSONResponse:
            node = request.path_params["node"]
            outcome = await drain(node, drained) if drain is not None else None
            if outcome is None:
                return JSONResponse({"error": "not_found", "detail": f"No managed node {node}."}, status_code=404)
            if not outcome.get("haproxy_told", True):
                detail = (f"{node} is recorded as {action}, but HAProxy did not take it (see the sidecar's log); "
                          "it is told again when it restarts, or ask again.")
                return JSONResponse({**outcome, "error": "haproxy_unavailable", "detail": detail}, status_code=502)
            return JSONResponse(outcome)

        return set_admin

    async def status(request: Request) -> JSONResponse:
        facts = await asyncio.to_thread(gpus)
        seen = await view() if view is not None else None
        return JSONResponse(status_document(statuses(), time.monotonic(), haproxy, facts, seen, floating, companions))

    async def prometheus(request: Request) -> Response:
        facts = await asyncio.to_thread(gpus)
        everything = [*([haproxy] if haproxy is not None else []), *(companions or []), *statuses()]
        return Response(metrics.render(everything, time.monotonic(), facts), media_type=CONTENT_TYPE_LATEST)

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def snapshot() -> tuple[dict, HAProxyView | None]:
        seen = await view() if view is not None else None
        return status_document(statuses(), time.monotonic(), haproxy, None, seen, floating, companions), seen

    history = OpsHistory(sampler(snapshot), history_interval)
    app = Starlette(
        middleware=[
            *([Middleware(AllowedHosts, allowed=allowed_hosts)] if allowed_hosts is not None else []),
            Middleware(SameOrigin),
            Middleware(AuthenticationMiddleware, backend=auth),
        ],
        exception_handlers={401: unauthorized},
        routes=[
            Route("/status", status),
            Route("/metrics", prometheus),
            Route("/healthz", healthz),
            Route("/retry/{node}/{part}", retry_part, methods=["POST"]),
            Route("/drain/{node}", admin_route("drain", True), methods=["POST"]),
            Route("/ready/{node}", admin_route("ready", False), methods=["POST"]),
            Route("/rolling-restart", rolling_restart, methods=["POST"]),
            Route("/add-node", add_node, methods=["POST"]),
            Route("/remove-node/{node}", remove_node, methods=["POST"]),
            Route("/operation", operation),
            *operations_routes(snapshot, history),
        ]
    )
    app.state.ops_history = history
    return app
