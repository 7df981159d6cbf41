"""An account's admin page, in process on an SQLite store (``httpx.ASGITransport``, no sockets): the jobs service's
``/v1/account`` routes and the web front's ``/account`` page in front of them (with sign-in's gate).

Only a signed-in admin manages their account (a member gets 403 with a sentence, no session 401); another account's
member or key is a 404 and stays as it was; a key is shown once, in the answer that creates it; a revoked key is
refused by the service at once, though it had just been used (its cache entry is dropped); a removed member's
session ends; an admin cannot remove or demote themselves; bodies are bounded and checked (422 in the usual shape);
a form posted from another site (``Origin`` or ``Sec-Fetch-Site``) changes nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import Engine

from jobs.api import JobsApi, create_app
from jobs.api.sessions import Sessions, SignIn
from jobs.store import add_member, create_account, create_key, list_keys, make_engine, members, upgrade
from jobs.store import passwords as password_module
from jobs.store.passwords import set_password
from webui.session_token import SESSION_COOKIE, SessionSigner
from webui.web.jobs_client import JobsClient
from webui.web.signin import SignIn as WebSignIn

SECRET = "cluster-secret-for-tests-0123456789"
PASSWORD = "correct horse battery"

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Site:
    engine: Engine
    sessions: Sessions
    api: httpx.AsyncClient
    """The jobs service."""
    web: httpx.AsyncClient
    """A web front with sign-in and the account page."""

    def login(self, user: str, account: str = "studio-a") -> dict[str, str]:
        """The ``Authorization`` a web front passes on for ``user`` signed in."""
        return {"Authorization": f"Session {self.token(user, account)}"}

    def token(self, user: str, account: str = "studio-a") -> str:
        signed = self.sessions.sign_in(SignIn(account=account, user=user, password=PASSWORD))
        assert signed.token is not None
        return signed.token


@pytest.fixture
async def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Site]:
    """studio-a: alice (admin), bob (member); studio-b: carol (admin) with a key; every one with ``PASSWORD``."""
    monkeypatch.setattr(password_module, "SCRYPT_N", 2**10)
    url = f"sqlite:///{tmp_path / 'jobs.sqlite3'}"
    upgrade(url)
    engine = make_engine(url)
    for account, user, role in (("studio-a", "alice", "admin"), ("studio-a", "bob", "member"),
                                ("studio-b", "carol", "admin")):
        if user != "bob":
            create_account(engine, account)
        add_member(engine, account, user, role)
        set_password(engine, account, user, PASSWORD)
    create_key(engine, "studio-b", ["generate"])
    sessions = Sessions(engine, SessionSigner(SECRET))
    jobs_app = create_app(JobsApi(engine, sessions=sessions))
    jobs = JobsClient("http://jobs", attempts=1, transport=httpx.ASGITransport(jobs_app))
    web = FastAPI()
    signing_in = WebSignIn(jobs, SECRET)
    signing_in.pages(web)
    signing_in.guard(web)
    async with (httpx.AsyncClient(transport=httpx.ASGITransport(jobs_app), base_url="http://jobs") as api,
                httpx.AsyncClient(transport=httpx.ASGITransport(web), base_url="http://studio") as page):
        yield Site(engine, sessions, api, page)
    await jobs.aclose()
    engine.dispose()


async def test_only_a_signed_in_admin_manages_the_account(site: Site) -> None:
    bob = site.login("bob")
    for method, path, body in (("GET", "", None), ("PUT", "/members/dave", {"role": "admin"}),
                               ("DELETE", "/members/alice", None), ("POST", "/keys", {"scopes": ["admin"]})):
        refused = await site.api.request(method, "/v1/account" + path, json=body, headers=bob)
        assert refused.status_code == 403, (method, path)
        assert refused.json() == {"error": "admins_only", "fields": [], "detail": "Only the admins of studio-a "
                                  "manage its members and API keys; ask one of them."}
    assert [m.user for m in members(site.engine, "studio-a")] == ["alice", "bob"] and not list_keys(
        site.engine, "studio-a")
    assert (await site.api.get("/v1/account")).json()["error"] == "session_required"
    _, key = create_key(site.engine, "studio-a", ["admin"])  # an API key, even an admin one, is no signed-in admin
    assert (await site.api.get("/v1/account", headers={"Authorization": f"Bearer {key}"})).status_code == 401
    shown = (await site.api.get("/v1/account", headers=site.login("alice"))).json()
    assert shown["account"] == "studio-a" and [(m["user"], m["role"]) for m in shown["members"]] == [
        ("alice", "admin"), ("bob", "member")]
    assert [k["scopes"] for k in shown["keys"]] == [["admin"]] and "key" not in str(shown["keys"][0].get("key"))


async def test_members_are_added_changed_and_removed_and_a_removed_member_s_session_ends(site: Site) -> None:
    alice = site.login("alice")
    added = await site.api.put("/v1/account/members/dave", json={"role": "member", "password": PASSWORD},
                               headers=alice)
    assert added.status_code == 200 and added.json()["role"] == "member"
    dave = site.token("dave")  # the password the admin gave works
    assert (await site.api.get("/v1/sessions/current", headers={"Authorization": f"Session {dave}"})).is_success
    assert (await site.api.put("/v1/account/members/bob", json={"role": "admin"}, headers=alice)).is_success
    assert (await site.api.get("/v1/account", headers=site.login("bob"))).status_code == 200  # bob is an admin now

    assert (await site.api.delete("/v1/account/members/dave", headers=alice)).status_code == 204
    for path in ("/v1/sessions/current", "/v1/account", "/v1/jobs"):
        ended = await site.api.get(path, headers={"Authorization": f"Session {dave}"})
        assert ended.status_code == 401 and ended.json()["error"] == "session_invalid", path

    for method, body in (("PUT", {"role": "member"}), ("DELETE", None)):
        own = await site.api.request(method, "/v1/account/members/alice", json=body, headers=alice)
        assert own.status_code == 409 and own.json()["error"] == "own_admin_role"
    short = await site.api.put("/v1/account/members/erin", json={"password": "short"}, headers=alice)
    assert short.status_code == 422 and "10 to 1000 characters" in short.json()["detail"]
    role = await site.api.put("/v1/account/members/erin", json={"role": "owner"}, headers=alice)
    assert role.status_code == 422 and role.json()["fields"][0]["field"] == "role"
    assert [(m.user, m.role) for m in members(site.engine, "studio-a")] == [("alice", "admin"), ("bob", "admin")]


async def test_another_account_s_member_or_key_is_unknown(site: Site) -> None:
    alice = site.login("alice")
    [carol_key] = list_keys(site.engine, "studio-b")
    gone = await site.api.delete("/v1/account/members/carol", headers=alice)
    assert gone.status_code == 404 and gone.json()["error"] == "member_not_found"
    for name in (carol_key.id, carol_key.prefix):
        revoked = await site.api.post(f"/v1/account/keys/{name}/revoke", headers=alice)
        assert revoked.status_code == 404 and revoked.json()["error"] == "api_key_not_found"
    assert list_keys(site.engine, "studio-b")[0].revoked_at is None
    assert [m.user for m in members(site.engine, "studio-b")] == ["carol"]
    assert (await site.api.get("/v1/account", headers=alice)).json()["keys"] == []


async def test_a_key_is_shown_once_and_its_revocation_holds_at_once(site: Site) -> None:
    alice = site.login("alice")
    made = await site.api.post("/v1/account/keys", json={"scopes": ["history"], "label": "booking site"},
                               headers=alice)
    assert made.status_code == 201
    key = made.json()["key"]
    assert key.startswith(made.json()["prefix"]) and made.json()["scopes"] == ["history"]
    listed = await site.api.get("/v1/account", headers=alice)
    assert key not in listed.text and listed.json()["keys"][0]["key"] is None
    bearer = {"Authorization": f"Bearer {key}"}
    assert (await site.api.get("/v1/jobs", headers=bearer)).status_code == 200  # looked up and cached (5 s)

    revoked = await site.api.post(f"/v1/account/keys/{made.json()['id']}/revoke", headers=alice)
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    refused = await site.api.get("/v1/jobs", headers=bearer)
    assert refused.status_code == 401 and refused.json()["error"] == "revoked_api_key"

    for body in ({"scopes": []}, {"scopes": ["root"]}, {"scopes": ["admin"], "label": "x" * 101}):
        assert (await site.api.post("/v1/account/keys", json=body, headers=alice)).status_code == 422
    assert len(list_keys(site.engine, "studio-a")) == 1


async def test_the_account_page_shows_a_new_key_once_and_refuses_a_foreign_form(site: Site) -> None:
    site.web.cookies[SESSION_COOKIE] = site.token("alice")
    page = await site.web.get("/account")
    assert page.status_code == 200 and 'id="members"' in page.text and "bob" in page.text
    made = await site.web.post("/account/keys", data={"label": "partner app", "scope": ["generate", "history"]})
    assert made.status_code == 200 and "shown only this once" in made.text
    [key] = list_keys(site.engine, "studio-a")
    assert key.scopes == ("generate", "history") and key.label == "partner app"
    secret = made.text.split('<code id="new-key">')[1].split("</code>")[0]
    assert secret.startswith(key.prefix) and secret not in (await site.web.get("/account")).text

    for foreign in ({"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
        refused = await site.web.post("/account/keys/revoke", data={"key": key.id}, headers=foreign)
        assert refused.status_code == 403 and "Change the account from this site" in refused.text
    assert list_keys(site.engine, "studio-a")[0].revoked_at is None
    revoked = await site.web.post("/account/keys/revoke", data={"key": key.id}, headers={"Origin": "http://studio"})
    assert revoked.status_code == 303 and list_keys(site.engine, "studio-a")[0].revoked_at is not None

    site.web.cookies[SESSION_COOKIE] = site.token("bob")
    member = await site.web.get("/account")
    assert member.status_code == 403 and "Only the admins of studio-a manage" in member.text
    assert (await site.web.post("/account/members/remove", data={"user": "alice"})).status_code == 403
    assert [m.user for m in members(site.engine, "studio-a")] == ["alice", "bob"]
