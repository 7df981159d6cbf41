"""The session cookie's attributes: HttpOnly (no script reads it), SameSite=Strict (no other site's page makes
the browser send it), Secure when the site is served over TLS, the site's path, and the session's lifetime."""

from __future__ import annotations

from http.cookies import SimpleCookie

from starlette.types import Scope

from webui.same_site import over_tls
from webui.session_token import SESSION_COOKIE


def site_path(scope: Scope, path: str) -> str:
    """``path`` under the site's root path (``--root-path``)."""
    return scope.get("root_path", "").rstrip("/") + path


def session_cookie(scope: Scope, token: str, max_age: int) -> str:
    """The ``Set-Cookie`` value that keeps ``token`` in the browser for ``max_age`` seconds (0: deletes it)."""
    cookie = SimpleCookie()
    cookie[SESSION_COOKIE] = token
    morsel = cookie[SESSION_COOKIE]
    morsel["path"] = site_path(scope, "/")
    morsel["max-age"] = max_age
    morsel["httponly"] = True
    morsel["samesite"] = "Strict"
    if over_tls(scope):
        morsel["secure"] = True
    return morsel.OutputString()


def clear_cookie(scope: Scope) -> str:
    return session_cookie(scope, "", 0)
