"""The sign-in page (``GET /sign-in``), signing in (``POST /sign-in``: the form, checked by the jobs service) and
out (``POST /sign-out``: the cookie deleted).

The form is plain HTML, no script; a form posted from another site is refused (``same_site``; the cookie is
``SameSite=Strict`` besides, and the balancer refuses cross-site posts). A wrong name or password, or a locked
name, shows the page again with the jobs service's words and what was typed (never the password).
"""

from __future__ import annotations

import html
import logging
from datetime import UTC, datetime
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from webui.same_site import cross_site
from webui.session_token import SESSION_COOKIE
from webui.web.jobs_client import JobsClient, JobsError
from webui.web.signin.cookies import clear_cookie, session_cookie, site_path
from webui.web.signin.gate import SIGN_IN_PATH, SIGN_OUT_PATH
from webui.web.signin.sessions import SessionCheck, SessionUnknown

logger = logging.getLogger(__name__)

MAX_FORM_BYTES = 8192
PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign in · Portrait Studio</title>
<style>body{{font-family:system-ui,sans-serif;background:#faf7f2;display:grid;place-items:center;min-height:90vh}}
form{{background:#fff;padding:2em;border-radius:12px;box-shadow:0 2px 12px #0002;display:grid;gap:.8em;width:20em}}
input{{padding:.5em;font-size:1em}}button{{padding:.6em;font-size:1em;background:#d97706;color:#fff;border:0;
border-radius:6px}}.error{{color:#b91c1c}}</style></head>
<body><form method="post" action="{action}"><h1>Portrait Studio</h1>{error}
<label>Account <input name="account" id="account" value="{account}" required autocomplete="organization"></label>
<label>Name <input name="user" id="user" value="{user}" required autocomplete="username"></label>
<label>Password <input name="password" id="password" type="password" required autocomplete="current-password">
</label><button type="submit" id="sign-in">Sign in</button></form></body></html>"""


def page(request: Request, error: str = "", account: str = "", user: str = "", status: int = 200) -> HTMLResponse:
    shown = f'<p class="error" id="sign-in-error" role="alert">{html.escape(error)}</p>' if error else ""
    body = PAGE.format(action=html.escape(site_path(request.scope, SIGN_IN_PATH)), error=shown,
                       account=html.escape(account), user=html.escape(user))
    return HTMLResponse(body, status_code=status, headers={"Cache-Control": "no-store"})


async def read_fields(request: Request) -> dict[str, list[str]]:
    """The posted form's fields, each with all its values, at most ``MAX_FORM_BYTES`` (more: none)."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return {}
    return parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)


async def read_form(request: Request) -> dict[str, str]:
    """The posted form's fields (the first of each)."""
    return {name: values[0] for name, values in (await read_fields(request)).items()}


class SignInPages:
    """The routes (``router``) around one jobs client and session check."""

    def __init__(self, jobs: JobsClient, check: SessionCheck) -> None:
        self.jobs, self.check = jobs, check
        self.router = APIRouter(include_in_schema=False)
        self.router.add_api_route(SIGN_IN_PATH, self.form, methods=["GET"])
        self.router.add_api_route(SIGN_IN_PATH, self.sign_in, methods=["POST"])
        self.router.add_api_route(SIGN_OUT_PATH, self.sign_out, methods=["POST"])

    async def form(self, request: Request) -> Response:
        """The sign-in page; the studio at once for a member signed in already."""
        try:
            if await self.check.member(request.cookies.get(SESSION_COOKIE)) is not None:
                return RedirectResponse(site_path(request.scope, "/"), status_code=303)
        except SessionUnknown:
            pass
        return page(request)

    async def sign_in(self, request: Request) -> Response:
        if cross_site(request.scope):
            return page(request, "Sign in from this site's own page.", status=403)
        form = await read_form(request)
        account, user, password = form.get("account", "").strip(), form.get("user", "").strip(), form.get(
            "password", "")
        if not (account and user and password):
            return page(request, "Fill in your account, name and password.", account, user, 400)
        try:
            member = await self.jobs.sign_in(account, user, password)
        except JobsError as exc:
            return page(request, str(exc), account, user, refusal_status(exc))  # 401 wrong, 429 locked, 422 long
        assert member.token is not None  # a sign-in's answer carries it
        self.check.remember(member.token, member)
        logger.info("%s of %s signed in", member.user, member.account)
        lasts = max(0, int((member.expires_at - datetime.now(UTC)).total_seconds()))
        response = RedirectResponse(site_path(request.scope, "/"), status_code=303)
        response.headers.append("set-cookie", session_cookie(request.scope, member.token, lasts))
        return response

    async def sign_out(self, request: Request) -> Response:
        """The cookie deleted; back to the sign-in page."""
        response = RedirectResponse(site_path(request.scope, SIGN_IN_PATH), status_code=303)
        response.headers.append("set-cookie", clear_cookie(request.scope))
        return response


def refusal_status(error: JobsError) -> int:
    """The jobs service's refusal passed on (401, 403, 404, 409, 422, 429); 503 when it did not answer."""
    return error.status if error.status and error.status < 500 else 503
