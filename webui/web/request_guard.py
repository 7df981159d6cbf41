"""The web front's guard around the Gradio app: bounded bodies, checked ids and calls, JSON errors.

``RequestGuard`` is ASGI middleware added inside the mounted Gradio app (so that it sits below
Gradio's own catch-all 500 handler and can still answer). For every HTTP request it:

- bounds the body in bytes and time (``request_body.BodyReader``: 413, 408; a client that
  disconnects mid-body is logged as one line with nginx's 499, not a traceback);
- checks every client-chosen id (``session_hash``, ``event_id``, ``upload_id``, in the query,
  the path or a queue body) against ``gradio_routes.CLIENT_ID``: 422 otherwise, before Gradio
  keys any state by it;
- checks a body that puts a job in the queue (``queue/join``, ``call/<api>``, ``call/v2/<api>``)
  before Gradio sees it: a JSON object whose ``fn_index``, when given, names one of the page's
  events (422 otherwise, not a ``KeyError`` with a traceback);
- refuses a direct call (``run/<api>``, ``api/<api>``) of a queued event with 404: outside the
  queue no concurrency limit, queue size or presence check would apply. The page's small
  unqueued events (a size preset, "reuse seed") still go that way;
- counts each session's open event streams (``queue/data``, and the curl-style
  ``call/[v2/]<api>/<event id>``) in ``EventStreams``, so that a job whose client never listens,
  or stopped listening, can be cancelled (503 once ``EventStreams`` is full);
- ends at once, with an error event, a ``queue/data`` stream of a session with no job here and no join
  answered here that awaits it (``session_jobs``: Gradio would send it heartbeats forever);
- turns an error that escapes Gradio before any response was sent into a JSON answer: 400
  for a malformed upload, else 500 naming the request id (the traceback stays in the log).

Every answer is an ``ErrorBody``-shaped JSON object: ``{"error", "detail", "fields"}``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from webui import trace
from webui.contract import CLIENT_GONE_STATUS, CLIENT_ID_RULE
from webui.web.gradio_routes import GradioRoutes, Resolved, Role, client_id_problems
from webui.web.presence import EventStreams, event_session
from webui.web.request_body import BodyReader, RequestRefused, error_response
from webui.web.session_jobs import AwaitedStreams, answer_orphan, has_job

logger = logging.getLogger(__name__)

MAX_JOIN_BYTES = 1024 * 1024
"""Largest queue or call body: component values and file references, never file contents."""


class DuplicateKey(ValueError):
    """A JSON object names one key twice: readers disagree on which value counts (HAProxy takes the first)."""


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """``json.loads``' object hook: a dict, refusing an object that names a key twice."""
    data = dict(pairs)
    if len(data) != len(pairs):
        names = sorted({key for key, _ in pairs if sum(other == key for other, _ in pairs) > 1})
        raise DuplicateKey(f"The request body names {', '.join(names)} more than once.")
    return data


class RequestGuard:
    """ASGI middleware: bounded bodies, checked ids and queue bodies, refused direct calls, JSON errors."""

    def __init__(
        self,
        app: ASGIApp,
        max_body_bytes: int,
        body_timeout: float,
        routes: GradioRoutes,
        events: Callable[[], Mapping[int, Any]],
        queue: Callable[[], Any],
        streams: EventStreams,
        awaited: AwaitedStreams,
    ) -> None:
        """``events``: the page's events by ``fn_index`` (``Blocks.fns``); ``queue``: Gradio's queue;
        ``awaited``: the joins answered here that no data stream followed yet."""
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.body_timeout = body_timeout
        self.routes = routes
        self.events = events
        self.queue = queue
        self.streams = streams
        self.awaited = awaited

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = self.routes.resolve(scope)
        try:
            check_ids(dict(route.params))
            for name, value in parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True):
                check_ids({name: value})
        except RequestRefused as refused:
            await self._refuse(scope, refused)(scope, receive, send)
            return
        listener = self._listener(route, scope)
        if listener is None:
            await self._guarded(scope, receive, send, route)
            return
        if route.role is Role.QUEUE_STREAM:
            awaited = self.awaited.followed(listener)  # every stream takes its join, with a job here or not
            if not awaited and not has_job(self.queue(), listener):
                await answer_orphan(scope, receive, send)
                return
        if not self.streams.opened(listener):
            refused = RequestRefused(503, "too_many_streams", "This web front has too many open event streams; "
                                     "try again in a minute.")
            await self._refuse(scope, refused)(scope, receive, send)
            return
        try:
            await self._guarded(scope, receive, send, route)
        finally:
            self.streams.closed(listener)

    def _listener(self, route: Resolved, scope: Scope) -> str | None:
        """The session an event stream listens for; None for any other request."""
        if route.role is Role.QUEUE_STREAM:
            return dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"))).get("session_hash", "")
        if route.role is Role.CALL_STREAM:
            return event_session(self.queue(), route.params["event_id"])
        return None

    async def _guarded(self, scope: Scope, receive: Receive, send: Send, route: Resolved) -> None:
        reader = BodyReader(receive, self.max_body_bytes, self.body_timeout)
        started = False
        joining: str | None = None  # the session of a join in the queue

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if reader.refused is not None and not started:
                return  # the app's own answer to a refused body (e.g. Gradio's plain 400): ours goes out
            if message["type"] == "http.response.start":
                started = True
                if joining is not None and message["status"] == 200:
                    self.awaited.answered(joining)  # before the answer leaves: the client's stream comes after
            await send(message)

        try:
            app_receive: Receive = reader
            if scope["method"] == "POST" and route.role in (Role.QUEUE_ENTRY, Role.DIRECT_CALL):
                app_receive, call = await self._checked_call(reader, route, scope)
                if route.role is Role.QUEUE_ENTRY and isinstance(call.get("session_hash"), str):
                    joining = call["session_hash"]
            await self.app(scope, app_receive, tracking_send)
            if reader.refused is not None:
                raise reader.refused
        except RequestRefused as refused:
            if not started and refused.status != CLIENT_GONE_STATUS:
                await self._refuse(scope, refused)(scope, receive, send)
            else:
                self._refuse(scope, refused)
        except Exception as exc:
            if started:
                raise
            await self._unexpected(scope, exc)(scope, receive, send)

    async def _checked_call(self, reader: BodyReader, route: Resolved, scope: Scope) -> tuple[Receive, dict]:
        """Read and check a queue or direct-call body: a ``receive`` that replays it to Gradio, and its JSON."""
        reader.max_bytes = min(reader.max_bytes, MAX_JOIN_BYTES)
        body = await reader.read_all()
        try:
            data = json.loads(body, object_pairs_hook=_unique_keys)
        except ValueError as exc:
            detail = str(exc) if isinstance(exc, DuplicateKey) else "The request body is not valid JSON."
            raise RequestRefused(422, "invalid_json", detail) from None
        if not isinstance(data, dict):
            raise RequestRefused(422, "invalid_json", "The request body must be a JSON object.")
        check_ids(data)
        events = self.events()
        fn_index = data.get("fn_index")
        if fn_index is not None and (type(fn_index) is not int or fn_index not in events):
            raise RequestRefused(422, "invalid_request", "fn_index: no such event on this page.", ["fn_index"])
        if route.role is Role.DIRECT_CALL:
            api_name = route.params.get("api_name")
            event = events[fn_index] if fn_index is not None else next(
                (fn for fn in events.values() if fn.api_name == api_name), None)
            if event is None:
                raise RequestRefused(404, "not_found", "No such event on this page.")
            if event.queue:
                raise RequestRefused(404, "queue_only", f"{event.api_name} runs through the queue only: use "
                                     f"gradio_client, or POST /gradio_api/call/{event.api_name} and read its events.")
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await reader()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        return replay, data

    @staticmethod
    def _refuse(scope: Scope, refused: RequestRefused) -> JSONResponse:
        """Log a refusal; the answer to send (unless the client is gone)."""
        logger.info("%s %s -> %d %s: %s", scope["method"], scope["path"], refused.status, refused.error,
                    refused.detail)
        return error_response(refused.status, refused.error, refused.detail, refused.fields)

    @staticmethod
    def _unexpected(scope: Scope, exc: Exception) -> JSONResponse:
        """The answer to an error that escaped the app before it answered."""
        if scope["path"].endswith("/upload"):
            logger.info("POST %s -> 400: malformed upload (%s)", scope["path"], type(exc).__name__)
            return error_response(400, "invalid_upload", "files: every 'files' part must be a file.")
        request_id = trace.request_id.get() or trace.new_request_id()  # the id HAProxy logged, too
        logger.error("unexpected %s in %s %s (request id %s)", type(exc).__name__, scope["method"], scope["path"],
                     request_id, exc_info=exc)
        detail = f"Unexpected error; it is in the log under request id {request_id}."
        return error_response(500, "internal_error", detail)


def check_ids(values: Mapping[str, Any]) -> None:
    """Refuse (422) client ids among ``values`` that break ``CLIENT_ID``."""
    problems = client_id_problems(values)
    if problems:
        raise RequestRefused(422, "invalid_id", f"{', '.join(problems)}: must be {CLIENT_ID_RULE}.", problems)
