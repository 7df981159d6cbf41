"""``GET /gradio_api/queue/data`` at the jobs service: an API client's event stream, through the relay."""

from __future__ import annotations

import logging

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from jobs.relay.relay import StreamRelay, forwarded
from webui.contract import QUEUE_DATA_PATH
from webui.web.gradio_routes import CLIENT_ID, CLIENT_ID_RULE

logger = logging.getLogger(__name__)

PASSED_BACK = ("content-type", "retry-after")
"""A web front's headers that reach the client with a refusal (the rest are the hop's)."""


def refused(status: int, error: str, detail: str, fields: tuple[str, ...] = (),
            retry_after: str | None = None) -> JSONResponse:
    """An answer in the web fronts' words and shape (``webui.web.request_guard``)."""
    headers = {"Retry-After": retry_after} if retry_after else None
    return JSONResponse({"error": error, "detail": detail, "fields": list(fields)}, status_code=status,
                        headers=headers)


def relay_route(app: FastAPI, relay: StreamRelay) -> None:
    """Serve ``QUEUE_DATA_PATH`` on ``app`` through ``relay``."""

    async def queue_data(request: Request, session_hash: str) -> Response:
        """The session's event stream; the web front's own answer when it refuses one (401, 422, 503, ...)."""
        if not CLIENT_ID.fullmatch(session_hash):
            return refused(422, "invalid_id", f"session_hash: must be {CLIENT_ID_RULE}.", ("session_hash",))
        headers = forwarded(request.headers)
        try:
            first = await relay.open(session_hash, headers)
        except httpx.HTTPError as exc:
            logger.warning("session %s: no web front answered its stream: %s", session_hash, exc)
            return refused(503, "unavailable", "No web front answers now: please try again.", retry_after="1")
        if first.status_code != 200:
            body = await first.aread()
            await first.aclose()
            kept = {name: first.headers[name] for name in PASSED_BACK if name in first.headers}
            return Response(body, status_code=first.status_code, headers=kept)
        return StreamingResponse(relay.relay(first, session_hash, headers), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})

    app.add_api_route(QUEUE_DATA_PATH, queue_data, methods=["GET"], include_in_schema=False)
