"""The account page (``/account``): a signed-in admin manages their account's members and API keys.

Plain HTML forms, no script: each form posts here, the web front passes it on to the jobs service's
``/v1/account`` with the member's session (the gate put it in ``Authorization``), and answers with the page again
(after a change, a redirect to it). The jobs service decides who may do what (a member gets its 403 sentence); a
new key is shown in the answer that made it, and never again. A form from another site is refused
(``same_site``).
"""

from __future__ import annotations

import html
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from webui.same_site import cross_site
from webui.web.jobs_client import JobsClient, JobsError
from webui.web.jobs_wire import SCOPES, AccountKey, AccountPage
from webui.web.signin.cookies import site_path
from webui.web.signin.pages import read_fields, refusal_status

logger = logging.getLogger(__name__)

ACCOUNT_PATH = "/account"
STYLE = """body{font-family:system-ui,sans-serif;background:#faf7f2;max-width:60em;margin:2em auto;padding:0 1em}
table{border-collapse:collapse;width:100%;background:#fff}td,th{padding:.4em;border-bottom:1px solid #eee;
text-align:left}form{display:inline}section{margin:1.5em 0}.error{color:#b91c1c}.new-key{background:#fef3c7;
padding:1em;border-radius:8px}code{font-size:1.05em;user-select:all}button{cursor:pointer}"""


def when(moment: datetime | None, none: str = "never") -> str:
    return f"{moment:%Y-%m-%d %H:%M} UTC" if moment else none


def field(name: str, value: str) -> str:
    return f'<input type="hidden" name="{name}" value="{html.escape(value)}">'


def members_html(page: AccountPage, action: str) -> str:
    rows = []
    for member in page.members:
        other = "admin" if member.role == "member" else "member"
        actions = "(you)" if member.user == page.user else (
            f'<form method="post" action="{action}/members">{field("user", member.user)}{field("role", other)}'
            f'<button>Make {other}</button></form> <form method="post" action="{action}/members/remove">'
            f'{field("user", member.user)}<button>Remove</button></form>')
        rows.append(f"<tr><td>{html.escape(member.user)}</td><td>{member.role}</td><td>{when(member.added_at)}</td>"
                    f"<td>{actions}</td></tr>")
    return ("<table id=\"members\"><tr><th>Name</th><th>Role</th><th>Added</th><th></th></tr>" + "".join(rows)
            + f'</table><p><form method="post" action="{action}/members">Add <input name="user" required '
            'maxlength="200" placeholder="name"> as <select name="role"><option>member</option><option>admin'
            '</option></select> with the password <input name="password" type="password" minlength="10" '
            'autocomplete="new-password" placeholder="at least 10 characters"> <button>Add member</button></form></p>')


def keys_html(page: AccountPage, action: str) -> str:
    rows = []
    for key in page.keys:
        state = (f"revoked {when(key.revoked_at)}" if key.revoked_at else
                 f'<form method="post" action="{action}/keys/revoke">{field("key", key.id)}'
                 f'<button class="revoke">Revoke</button></form>')
        rows.append(f'<tr data-prefix="{key.prefix}"><td><code>{key.prefix}…</code></td>'
                    f"<td>{html.escape(key.label or '')}</td><td>{', '.join(key.scopes)}</td>"
                    f"<td>{when(key.created_at)}</td><td>{when(key.last_used_at)}</td><td>{state}</td></tr>")
    boxes = " ".join(f'<label><input type="checkbox" name="scope" value="{scope}"'
                     f'{" checked" if scope == "generate" else ""}> {scope}</label>' for scope in SCOPES)
    return ('<table id="keys"><tr><th>Key</th><th>Label</th><th>Scopes</th><th>Created</th><th>Last used</th>'
            "<th></th></tr>" + "".join(rows) + f'</table><p><form method="post" action="{action}/keys">'
            f'<input name="label" maxlength="100" placeholder="what it is for"> {boxes} '
            '<button id="create-key">Create key</button></form></p>')


def render(request: Request, page: AccountPage | None, error: str = "", new_key: AccountKey | None = None,
           status: int = 200) -> HTMLResponse:
    action = html.escape(site_path(request.scope, ACCOUNT_PATH))
    parts = [f'<p class="error" id="account-error" role="alert">{html.escape(error)}</p>' if error else ""]
    if new_key is not None and new_key.key:
        parts.append(f'<div class="new-key" id="new-key-box"><p>The new API key {new_key.prefix}…:</p>'
                     f'<p><code id="new-key">{html.escape(new_key.key)}</code></p><p>Copy it now and keep it in a '
                     "secret store: it is shown only this once. Lost, it cannot be shown again: revoke it and create "
                     "another.</p></div>")
    if page is not None:
        parts.append(f"<p>{html.escape(page.account)} · signed in as {html.escape(page.user)}</p>"
                     f"<section><h2>Members</h2>{members_html(page, action)}</section>"
                     f"<section><h2>API keys</h2>{keys_html(page, action)}</section>")
    body = (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Account · Portrait Studio</title>'
            f'<style>{STYLE}</style></head><body><p><a href="{html.escape(site_path(request.scope, "/"))}">'
            f'← Studio</a></p><h1>Account</h1>{"".join(parts)}</body></html>')
    return HTMLResponse(body, status_code=status, headers={"Cache-Control": "no-store"})


class AccountPages:
    """The account page's routes (``router``) around one jobs client."""

    def __init__(self, jobs: JobsClient) -> None:
        self.jobs = jobs
        self.router = APIRouter(include_in_schema=False)
        self.router.add_api_route(ACCOUNT_PATH, self.show, methods=["GET"])
        for path, change in (("/members", self.put_member), ("/members/remove", self.remove_member),
                             ("/keys", self.create_key), ("/keys/revoke", self.revoke_key)):
            self.router.add_api_route(ACCOUNT_PATH + path, self.posted(change), methods=["POST"])

    async def show(self, request: Request, error: str = "", new_key: AccountKey | None = None,
                   status: int = 200) -> Response:
        try:
            page = await self.jobs.account(request.headers.get("authorization", ""))
        except JobsError as exc:
            return render(request, None, str(exc), status=refusal_status(exc))
        return render(request, page, error, new_key, status)

    def posted(self, change: Callable[[str, dict[str, list[str]]], Awaitable[AccountKey | None]]):
        """A form's route: refused from another site; the change made, then the page (a new key shown on it)."""

        async def route(request: Request) -> Response:
            if cross_site(request.scope):
                return render(request, None, "Change the account from this site's own page.", status=403)
            try:
                made = await change(request.headers.get("authorization", ""), await read_fields(request))
            except JobsError as exc:
                return await self.show(request, str(exc), status=refusal_status(exc))
            if made is not None:
                return await self.show(request, new_key=made)
            return RedirectResponse(site_path(request.scope, ACCOUNT_PATH), status_code=303)

        return route

    async def put_member(self, login: str, form: dict[str, list[str]]) -> None:
        await self.jobs.put_member(login, first(form, "user").strip(), first(form, "role"),
                                   first(form, "password") or None)

    async def remove_member(self, login: str, form: dict[str, list[str]]) -> None:
        await self.jobs.remove_member(login, first(form, "user"))

    async def create_key(self, login: str, form: dict[str, list[str]]) -> AccountKey:
        return await self.jobs.create_key(login, form.get("scope", []), first(form, "label").strip() or None)

    async def revoke_key(self, login: str, form: dict[str, list[str]]) -> None:
        await self.jobs.revoke_key(login, first(form, "key"))


def first(form: dict[str, list[str]], name: str) -> str:
    return (form.get(name) or [""])[0]
