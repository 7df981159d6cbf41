"""ASGI middleware in front of the whole studio: only a request with a good session cookie gets through, and then
with the session as its only identity (``Authorization: Session <token>``, which the page's handlers pass on to
the jobs service); whatever ``Authorization`` the client sent is dropped.

Without a good cookie, a page load (``GET``/``HEAD``) is sent to the sign-in page (a stale cookie is cleared) and
anything else is a JSON 401; the sign-in page itself and the probes (``OPEN_PATHS``) need none.
"""

from __future__ import annotations

import json
import logging

from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

from webui.contract import OPEN_PATHS
from webui.session_token import SESSION_COOKIE
from webui.web.signin.cookies import clear_cookie, site_path
from webui.web.signin.sessions import SessionCheck, SessionUnknown, login_header

logger = logging.getLogger(__name__)

SIGN_IN_PATH, SIGN_OUT_PATH = "/sign-in", "/sign-out"
OPEN = frozenset((SIGN_IN_PATH, SIGN_OUT_PATH, *OPEN_PATHS))


class SignInGate:
    """Lets through requests of signed-in members only (see the module)."""

    def __init__(self, app: ASGIApp, check: SessionCheck) -> None:
        self.app, self.check = app, check

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        connection = HTTPConnection(scope)
        path = scope["path"].removeprefix(scope.get("root_path", "")) or "/"
        if path in OPEN:
            await self.app(scope, receive, send)
            return
        token = connection.cookies.get(SESSION_COOKIE)
        try:
            member = await self.check.member(token)
        except SessionUnknown as exc:
            logger.warning("a session could not be checked: %s", exc)
            await refuse(scope, send, 503, "sign_in_unavailable", "Sign-in cannot be checked just now (the jobs "
                         "service does not answer); try again in a moment.")
            return
        if member is None:
            await refuse(scope, send, 401, "sign_in_required", "Sign in first: open the studio page and sign in.",
                         clear=token is not None)
            return
        headers = [(name, value) for name, value in scope["headers"] if name != b"authorization"]
        headers.append((b"authorization", login_header(token or "").encode("latin-1")))
        await self.app({**scope, "headers": headers}, receive, send)


async def refuse(scope: Scope, send: Send, status: int, error: str, detail: str, clear: bool = False) -> None:
    """A page load goes to the sign-in page; anything else gets ``{"error","detail","fields"}``."""
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008})
        return
    cookie = [(b"set-cookie", clear_cookie(scope).encode("latin-1"))] if clear else []
    if scope["method"] in ("GET", "HEAD") and status == 401:
        location = site_path(scope, SIGN_IN_PATH).encode("latin-1")
        await send({"type": "http.response.start", "status": 303, "headers": [
            (b"location", location), (b"cache-control", b"no-store"), (b"content-length", b"0"), *cookie]})
        await send({"type": "http.response.body", "body": b""})
        return
    body = json.dumps({"error": error, "detail": detail, "fields": []}).encode()
    extra = [(b"retry-after", b"5")] if status == 503 else []
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"), *extra, *cookie]})
    await send({"type": "http.response.body", "body": body})
