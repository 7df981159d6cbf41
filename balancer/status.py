"""What the sidecar tells the outside world: ``GET /status`` (JSON), ``GET /metrics``, ``GET /healthz``,
and the one action it takes from outside, ``POST /retry/NODE/PART`` (HTTP basic auth).

``PartStatus`` is the record each supervisor keeps about its process; ``SidecarMetrics``
holds the Prometheus metrics (in their own registry, not the global one); ``status_app``
serves both over HTTP. The read-only routes need no password (the sidecar listens on
loopback by default); ``POST /retry`` needs the stats page's user and password. ``/status`` looks like::

    {"nodes": {"node1": {"worker": {"state": "ready", "pid": 4242, "restarts": 1,
                                    "last_cause": "oom_exit", "uptime": 12.5, ...},
                         "web": {...}}},
     "crash_looped": [], "parts": 4, "ready": 4,
     "haproxy": {"state": "ready", "pid": 4200, "restarts": 0, ...}}

``parts`` and ``ready`` count node parts. ``haproxy`` is there when the sidecar supervises
HAProxy (under ``launch.py``); in metrics, ``crash_looped`` and ``POST /retry`` it is the part
``haproxy`` of the pseudo-node ``balancer``.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest
from prometheus_client import Counter as PromCounter
from prometheus_client import Enum as PromEnum
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from balancer.basic_auth import BasicAuth
from balancer.causes import Death, DeathCause

BALANCER = "balancer"
"""The pseudo-node HAProxy is a part of (metric labels, ``crash_looped``, ``POST /retry/balancer/haproxy``)."""


class PartState(str, Enum):
    """Life cycle of a supervised process."""

    STARTING = "starting"
    """Started, not ready yet (model loading); out of rotation."""
    READY = "ready"
    """Answering its readiness probe; in rotation."""
    UNREADY = "unready"
    """Alive but failing its readiness probe (restarted if that lasts)."""
    BACKOFF = "backoff"
    """Dead, waiting before the next restart."""
    CRASH_LOOP = "crash_loop"
    """Died too often: no more restarts, left in maint."""
    STOPPING = "stopping"
    STOPPED = "stopped"


@dataclass
class PartStatus:
    """What one supervisor knows about its process (a node's web front or worker, or HAProxy)."""

    node: str
    part: str
    backend: str | None
    """The HAProxy backend of a node part's server; None for HAProxy itself."""
    url: str
    state: PartState = PartState.STOPPED
    pid: int | None = None
    restarts: int = 0
    last_cause: DeathCause | None = None
    last_detail: str = ""
    last_returncode: int | None = None
    deaths: Counter = field(default_factory=Counter)
    started_at: float | None = None
    ready_at: float | None = None
    crash_looped: bool = False

    def snapshot(self, now: float) -> dict:
        """JSON-ready view, with uptime of the current process."""
        return {
            "state": self.state.value,
            "pid": self.pid,
            "url": self.url,
            "backend": self.backend,
            "restarts": self.restarts,
            "last_cause": self.last_cause.value if self.last_cause else None,
            "last_detail": self.last_detail,
            "last_returncode": self.last_returncode,
            "deaths": {cause.value: count for cause, count in self.deaths.items()},
            "uptime": round(now - self.started_at, 3) if self.started_at is not None and self.pid else None,
            "ready_for": round(now - self.ready_at, 3) if self.ready_at is not None else None,
            "crash_looped": self.crash_looped,
        }


class SidecarMetrics:
    """The sidecar's Prometheus metrics, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        labels = ["node", "part"]
        self.deaths = PromCounter(
            "portrait_sidecar_deaths", "Deaths of supervised processes, by cause.", [*labels, "cause"],
            registry=self.registry,
        )
        self.restarts = PromCounter(
            "portrait_sidecar_restarts", "Restarts of supervised processes.", labels, registry=self.registry
        )
        self.state = PromEnum(
            "portrait_sidecar_part_state", "Current state of each supervised process.", labels,
            states=[state.value for state in PartState], registry=self.registry,
        )
        self.crash_looped = Gauge(
            "portrait_sidecar_crash_looped", "1 when a process crash-looped and is no longer restarted.", labels,
            registry=self.registry,
        )
        self.uptime = Gauge(
            "portrait_sidecar_uptime_seconds", "Seconds since the current process started.", labels,
            registry=self.registry,
        )

    def register(self, status: PartStatus) -> None:
        """Create the label set of a process so that it shows up before anything happens."""
        self.restarts.labels(status.node, status.part)
        self.crash_looped.labels(status.node, status.part).set(0)
        for cause in DeathCause:
            self.deaths.labels(status.node, status.part, cause.value)
        self.set_state(status)

    def set_state(self, status: PartStatus) -> None:
        """Mirror a state change."""
        self.state.labels(status.node, status.part).state(status.state.value)
        self.crash_looped.labels(status.node, status.part).set(1 if status.crash_looped else 0)

    def record_death(self, status: PartStatus, death: Death) -> None:
        """Count a death by cause."""
        self.deaths.labels(status.node, status.part, death.cause.value).inc()

    def record_restart(self, status: PartStatus) -> None:
        """Count a restart."""
        self.restarts.labels(status.node, status.part).inc()

    def render(self, statuses: list[PartStatus], now: float) -> bytes:
        """The exposition text, uptimes refreshed."""
        for status in statuses:
            uptime = now - status.started_at if status.started_at is not None and status.pid else 0
            self.uptime.labels(status.node, status.part).set(uptime)
        return generate_latest(self.registry)


def status_document(statuses: list[PartStatus], now: float, haproxy: PartStatus | None = None) -> dict:
    """The ``/status`` JSON for these node parts (and HAProxy, when supervised)."""
    nodes: dict[str, dict] = {}
    for status in statuses:
        nodes.setdefault(status.node, {})[status.part] = status.snapshot(now)
    everything = statuses if haproxy is None else [haproxy, *statuses]
    document = {
        "nodes": nodes,
        "parts": len(statuses),
        "ready": sum(status.state is PartState.READY for status in statuses),
        "crash_looped": [f"{status.node}/{status.part}" for status in everything if status.crash_looped],
    }
    if haproxy is not None:
        document["haproxy"] = haproxy.snapshot(now)
    return document


def status_app(
    statuses: Callable[[], list[PartStatus]],
    metrics: SidecarMetrics,
    retry: Callable[[str, str], bool | None],
    auth: BasicAuth,
    haproxy: PartStatus | None = None,
) -> Starlette:
    """The sidecar's HTTP app: ``/status``, ``/metrics``, ``/healthz`` and ``POST /retry/NODE/PART``
    (try a crash-looped part again once its cause is fixed: 202, 409 if it is not crash-looped,
    404 if there is no such part, 401 without ``auth``'s user and password). ``statuses`` are the
    node parts; ``haproxy`` is HAProxy's, when the sidecar supervises it."""

    async def retry_part(request: Request) -> JSONResponse:
        if not auth.allows(request.headers.get("authorization")):
            return auth.challenge("POST /retry")
        node, part = request.path_params["node"], request.path_params["part"]
        outcome = retry(node, part)
        if outcome is None:
            return JSONResponse({"error": "not_found", "detail": f"No managed part {node}/{part}."}, status_code=404)
        if not outcome:
            return JSONResponse({"error": "not_crash_looped", "detail": f"{node}/{part} is not in a crash loop."},
                                status_code=409)
        return JSONResponse({"status": "retrying", "part": f"{node}/{part}"}, status_code=202)

    async def status(request: Request) -> JSONResponse:
        return JSONResponse(status_document(statuses(), time.monotonic(), haproxy))

    async def prometheus(request: Request) -> Response:
        everything = statuses() if haproxy is None else [haproxy, *statuses()]
        return Response(metrics.render(everything, time.monotonic()), media_type=CONTENT_TYPE_LATEST)

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[
            Route("/status", status),
            Route("/metrics", prometheus),
            Route("/healthz", healthz),
            Route("/retry/{node}/{part}", retry_part, methods=["POST"]),
        ]
    )
