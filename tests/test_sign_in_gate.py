"""The web front's sign-in (``webui.web.signin``) in process, against the real jobs API app on an SQLite store
(``httpx.ASGITransport``, no sockets): the sign-in form sets an HttpOnly, SameSite=Strict session cookie (Secure
behind https) and the gate then passes the session on as the request's only identity; without a good cookie a page
load goes to the sign-in page and anything else is a JSON 401; a client's own ``Authorization`` never passes; a
removed member is refused once the web front's check time passed; a form from another site is refused.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI, Request

from jobs.api import JobsApi, create_app
from jobs.api.sessions import Sessions
from jobs.store import add_member, create_account, make_engine, remove_member, upgrade
from jobs.store import passwords as password_module
from jobs.store.passwords import set_password
from webui.session_token import SESSION_COOKIE, SessionSigner
from webui.web.jobs_client import JobsClient
from webui.web.signin import SignIn

SECRET = "cluster-secret-for-tests-0123456789"
PASSWORD = "correct horse battery"
FORM = {"account": "studio-a", "user": "alice", "password": PASSWORD}

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[httpx.AsyncClient, object]]:
    """A web front with sign-in whose page answers with the ``Authorization`` it was given, and the store."""
    monkeypatch.setattr(password_module, "SCRYPT_N", 2**10)
    url = f"sqlite:///{tmp_path / 'jobs.sqlite3'}"
    upgrade(url)
    engine = make_engine(url)
    create_account(engine, "studio-a")
    add_member(engine, "studio-a", "alice")
    set_password(engine, "studio-a", "alice", PASSWORD)
    jobs_app = create_app(JobsApi(engine, sessions=Sessions(engine, SessionSigner(SECRET))))
    jobs = JobsClient("http://jobs", attempts=1, transport=httpx.ASGITransport(jobs_app))
    web = FastAPI()
    signing_in = SignIn(jobs, SECRET)
    signing_in.check.seconds = 0.0  # ask the jobs service every time
    signing_in.pages(web)

    @web.api_route("/{path:path}", methods=["GET", "POST"])
    async def studio(request: Request) -> dict[str, str | None]:
        return {"authorization": request.headers.get("authorization")}

    signing_in.guard(web)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(web), base_url="http://studio") as client:
        yield client, engine
    await jobs.aclose()
    engine.dispose()


async def test_signing_in_sets_a_strict_http_only_cookie_and_passes_only_the_session_on(site) -> None:
    client, _ = site
    refused = await client.get("/", headers={"Authorization": "Basic YWxpY2U6eA=="})
    assert refused.status_code == 303 and refused.headers["location"] == "/sign-in"
    assert (await client.post("/gradio_api/queue/join")).json()["error"] == "sign_in_required"
    assert 'name="password"' in (await client.get("/sign-in")).text

    signed = await client.post("/sign-in", data=FORM)
    assert signed.status_code == 303 and signed.headers["location"] == "/"
    cookie = signed.headers["set-cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}=s1.") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert 12 * 3600 - 60 < int(re.search(r"Max-Age=(\d+)", cookie)[1]) <= 12 * 3600 and "Secure" not in cookie
    token = client.cookies[SESSION_COOKIE]
    seen = await client.get("/", headers={"Authorization": "Basic YWxpY2U6eA=="})
    assert seen.json() == {"authorization": f"Session {token}"}  # the client's own header is gone

    behind_tls = await client.post("/sign-in", data=FORM, headers={"X-Forwarded-Proto": "https"})
    assert "; Secure" in behind_tls.headers["set-cookie"]

    out = await client.post("/sign-out")
    assert out.status_code == 303 and "Max-Age=0" in out.headers["set-cookie"]
    assert (await client.get("/")).status_code == 303


async def test_an_edited_cookie_or_a_removed_member_is_refused(site) -> None:
    client, engine = site
    await client.post("/sign-in", data=FORM)
    token = client.cookies[SESSION_COOKIE]
    assert (await client.get("/")).status_code == 200
    client.cookies[SESSION_COOKIE] = token.replace(".YWxpY2U.", ".Ym9i.")  # says bob, signed for alice
    answer = await client.get("/")
    assert answer.status_code == 303 and "Max-Age=0" in answer.headers["set-cookie"]  # the stale cookie cleared
    client.cookies[SESSION_COOKIE] = token
    remove_member(engine, "studio-a", "alice")
    assert (await client.get("/")).status_code == 303


async def test_wrong_passwords_are_shown_then_lock_and_a_foreign_form_is_refused(site) -> None:
    client, _ = site
    for _ in range(5):
        wrong = await client.post("/sign-in", data={**FORM, "password": "not the password"})
        assert wrong.status_code == 401 and "The account, name or password is not right." in wrong.text
        assert 'value="alice"' in wrong.text and "not the password" not in wrong.text
    locked = await client.post("/sign-in", data=FORM)
    assert locked.status_code == 429 and "Too many failed sign-ins; try again in 15 minutes." in locked.text
    foreign = await client.post("/sign-in", data=FORM, headers={"Sec-Fetch-Site": "cross-site"})
    assert foreign.status_code == 403 and SESSION_COOKIE not in foreign.headers.get("set-cookie", "")
