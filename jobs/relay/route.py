"""The relay's routes at the jobs service: a client's Gradio ``queue/join``, its event stream (``queue/data``) and
gradio_client's ``cancel``."""

from __future__ import annotations

import json
import logging

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from jobs.relay.relay import StreamRelay, forwarded
from webui.contract import (
    CLIENT_ID,
    CLIENT_ID_RULE,
    QUEUE_CANCEL_PATH,
    QUEUE_DATA_PATH,
    QUEUE_JOIN_PATH,
    RETRYABLE_STATUSES,
)

logger = logging.getLogger(__name__)

PASSED_BACK = ("content-type", "retry-after")
"""A web front's headers that reach the client with its answer (the rest are the hop's), besides its cookies."""
MAX_JOIN_BYTES = 1024 * 1024
"""The largest join the relay takes (an API call's arguments; a photo is uploaded apart, not joined)."""
NO_FRONT_NOW = "No web front answers now: please try again."


def refused(status: int, error: str, detail: str, fields: tuple[str, ...] = (),
            retry_after: str | None = None) -> JSONResponse:
    """An answer in the web fronts' words and shape (``webui.web.request_guard``)."""
    headers = {"Retry-After": retry_after} if retry_after else None
    return JSONResponse({"error": error, "detail": detail, "fields": list(fields)}, status_code=status,
                        headers=headers)


def passed_back(answer: httpx.Response, body: bytes) -> Response:
    """A web front's answer as the client gets it: its status, body, type, retry hint and cookies."""
    response = Response(body, status_code=answer.status_code,
                        headers={name: answer.headers[name] for name in PASSED_BACK if name in answer.headers})
    for cookie in answer.headers.get_list("set-cookie"):
        response.raw_headers.append((b"set-cookie", cookie.encode("latin-1")))
    return response


def gradio_id(body: bytes, name: str) -> str | None:
    """The id a join's or a cancel's JSON ``body`` names as ``name`` (``session_hash``, ``event_id``), if it is a
    Gradio id."""
    try:
        value = json.loads(body).get(name)
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) and CLIENT_ID.fullmatch(value) else None


def relay_route(app: FastAPI, relay: StreamRelay) -> None:
    """Serve ``QUEUE_JOIN_PATH``, ``QUEUE_CANCEL_PATH`` and ``QUEUE_DATA_PATH`` on ``app`` through ``relay``."""

    async def queue_join(request: Request) -> Response:
        """Join a call at the client's web front; the web front's answer."""
        body = await request.body()
        if len(body) > MAX_JOIN_BYTES:
            return refused(413, "body_too_large", f"A join may have at most {MAX_JOIN_BYTES} bytes.")
        try:
            answer = await relay.join(gradio_id(body, "session_hash"), body, forwarded(request.headers))
        except httpx.HTTPError as exc:
            logger.warning("a join reached no web front: %s", exc)
            return refused(503, "unavailable", NO_FRONT_NOW, retry_after="1")
        return passed_back(answer, answer.content)

    async def queue_cancel(request: Request) -> Response:
        """Cancel a call (the job too of one taken over elsewhere); the web front's answer."""
        body = await request.body()
        if len(body) > MAX_JOIN_BYTES:
            return refused(413, "body_too_large", f"A cancel may have at most {MAX_JOIN_BYTES} bytes.")
        try:
            answer = await relay.cancel(gradio_id(body, "session_hash"), gradio_id(body, "event_id"), body,
                                        forwarded(request.headers))
        except httpx.HTTPError as exc:
            logger.warning("a cancel reached no web front: %s", exc)
            return refused(503, "unavailable", NO_FRONT_NOW, retry_after="1")
        return passed_back(answer, answer.content)

    async def queue_data(request: Request, session_hash: str) -> Response:
        """The session's event stream; the web front's own answer when it refuses one (401, 422, 503, ...)."""
        if not CLIENT_ID.fullmatch(session_hash):
            return refused(422, "invalid_id", f"session_hash: must be {CLIENT_ID_RULE}.", ("session_hash",))
        headers = forwarded(request.headers)
        first: httpx.Response | None = None
        try:
            first = await relay.open(session_hash, headers)
        except httpx.HTTPError as exc:
            logger.warning("session %s: no web front answered its stream: %s", session_hash, exc)
        if first is not None and first.status_code != 200:
            body = await first.aread()
            await first.aclose()
            if not (first.status_code in RETRYABLE_STATUSES and relay.waits(session_hash)):
                return passed_back(first, body)
            first = None  # the web front that took its join is gone: the relay adopts its calls
        if first is None and not relay.waits(session_hash):
            return refused(503, "unavailable", NO_FRONT_NOW, retry_after="1")
        return StreamingResponse(relay.relay(first, session_hash, headers), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})

    app.add_api_route(QUEUE_JOIN_PATH, queue_join, methods=["POST"], include_in_schema=False)
    app.add_api_route(QUEUE_CANCEL_PATH, queue_cancel, methods=["POST"], include_in_schema=False)
    app.add_api_route(QUEUE_DATA_PATH, queue_data, methods=["GET"], include_in_schema=False)
