"""Every answer names its request: ``X-Request-ID`` as the client sent it (or a new one), as the worker does; a
synchronous generation passes it on to its worker, so one id finds the request in both logs."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from webui.worker.job_parsing import scope_request_id


class RequestId:
    """ASGI middleware: ``scope["state"]["request_id"]`` set, and echoed in the ``X-Request-ID`` header."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = scope_request_id(scope)
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode("latin-1"))]
            await send(message)

        await self.app(scope, receive, send_with_id)
