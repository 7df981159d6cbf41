"""The worker's request log, as ASGI middleware (``RequestLog``).

Every HTTP request gets a request id (from ``X-Request-ID``, or a new one, echoed back in the
response header), bound to each log line it causes; when it ends, one JSON line on the
``webui.worker.access`` logger and its count and duration in the metrics. Endpoints balancers and
scrapers poll are logged at DEBUG, everything else at INFO; an outcome is ``ok`` or the error's name.
"""

from __future__ import annotations

import json
import logging
import time
from http import HTTPStatus
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from webui import trace
from webui.contract import HEALTH_PATH, INFO_PATH, JOB_PATHS, METRICS_PATH, READY_PATH, TRAFFIC_PATH
from webui.trace import bound, headers_ids
from webui.worker.metrics import WorkerMetrics

access_logger = logging.getLogger("webui.worker.access")

PROBE_ENDPOINTS = frozenset({"/", HEALTH_PATH, READY_PATH, INFO_PATH, METRICS_PATH, TRAFFIC_PATH})
"""Endpoints balancers and scrapers poll: logged at DEBUG so the log stays readable."""
ENDPOINTS = (*PROBE_ENDPOINTS, *JOB_PATHS)


def status_outcome(status: int) -> str:
    """``ok`` below 400, else the status's name in snake case (``not_found``)."""
    if status < 400:
        return "ok"
    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "_")
    except ValueError:
        return f"http_{status}"


class RequestLog:
    """ASGI middleware: a request id (``X-Request-ID``), one JSON log line and metrics per request.

    Handlers may set ``request.state.outcome`` and ``request.state.params`` for the log.
    """

    def __init__(self, app: ASGIApp, node: str, metrics: WorkerMetrics) -> None:
        self.app = app
        self.node = node
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id, job_id = headers_ids(scope.get("headers") or [])
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode("latin-1"))]
            await send(message)

        with bound(request_id, job_id):  # every log line of this request names it (webui.log_setup)
            started = time.perf_counter()
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                self.log(scope, state, status, time.perf_counter() - started)

    def log(self, scope: Scope, state: dict[str, Any], status: int, seconds: float) -> None:
        """The request's JSON log line and its metrics."""
        path = scope["path"]
        endpoint = path if path in ENDPOINTS else "other"
        outcome = state.get("outcome") or status_outcome(status)
        self.metrics.observe_request(endpoint, outcome, seconds)
        job_id = trace.job_id.get()
        line = {
            "request_id": state["request_id"], **({"job_id": job_id} if job_id else {}), "method": scope["method"],
            "endpoint": endpoint, "status": status, "outcome": outcome, "duration_ms": round(seconds * 1000, 1),
            "node": self.node, **({"params": state["params"]} if "params" in state else {}),
        }
        access_logger.log(logging.DEBUG if endpoint in PROBE_ENDPOINTS else logging.INFO, json.dumps(line))
