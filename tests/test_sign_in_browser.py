"""Browser sign-in in a real Chromium on a real cluster: ``launch.py`` with ``jobs.sign_in``, HAProxy, the sidecar
and 2 nodes (2 web fronts) on the fixed-latency stand-in (``standin:0.3``). A member made with ``python -m jobs
accounts`` (the password piped in) signs in on the sign-in page and generates; the web front that served the page
is SIGKILLed (its PID from the sidecar), and a reload goes on at the other front still signed in: the cookie is
signed with the cluster secret every front shares, and the page's jobs are the member's account's. Five wrong
passwords lock the name (the jobs service counts them in the store); a forged or edited cookie, or an identity
header a client sends itself, gets the sign-in page. An admin creates an API key on the account page (shown once)
and revokes it there: the key's next API call, through the balancer's public entry, is refused.

Run under the cluster lock: ``flock /tmp/ph-cluster.lock python -m pytest -q tests/test_sign_in_browser.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import BrowserContext, Page, expect, sync_playwright
from sqlalchemy import select

from balancer.haproxy.process import status_is_out, status_is_up
from bench.harness.chromium import chromium_context
from bench.harness.launched_cluster import LaunchedCluster
from bench.harness.processes import Processes
from bench.harness.waiting import wait_until
from jobs.store import make_engine
from jobs.store.api_keys import PREFIX_LENGTH
from jobs.store.engine import default_url
from jobs.store.schema import accounts, jobs
from tests.browser import UI_TIMEOUT_MS, StudioPage
from tests.jobs_service import accounts_cli
from tests.suite_cluster import suite_options
from webui.session_token import SESSION_COOKIE

pytestmark = pytest.mark.browser

PASSWORD = "a long studio password"
JOB_TIMEOUT_MS = 60_000
SMALL = "Quick 512×512"


def run_accounts_cli(run_dir: Path, *args: str, password: str = "") -> None:
    """The accounts CLI on the cluster's store (its run directory's SQLite file), in this process."""
    done = accounts_cli(default_url(run_dir), *args, stdin=password)
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LaunchedCluster]:
    """2 nodes with sign-in on; studio-a's members alice (an admin) and bob, each with a password."""
    run_dir = tmp_path_factory.mktemp("sign-in-cluster")
    run_accounts_cli(run_dir, "create", "studio-a")
    for user, role in (("alice", "admin"), ("bob", "member")):
        run_accounts_cli(run_dir, "add-member", "studio-a", user, "--role", role)
        run_accounts_cli(run_dir, "set-password", "studio-a", user, password=PASSWORD + "\n")
    options = suite_options(model="standin:0.3", nodes=2, sidecar={"probe_interval": 0.5},
                            extra={"jobs": {"sign_in": True}, "health": {"down_interval": 0.25}})
    with Processes("sign-in-cluster") as processes:
        with LaunchedCluster(options, name="sign-in", processes=processes, run_dir=run_dir) as launched:
            yield launched


@pytest.fixture(scope="module")
def browser() -> Iterator[BrowserContext]:
    with sync_playwright() as playwright, chromium_context(playwright) as context:
        context.set_default_timeout(UI_TIMEOUT_MS)
        yield context


@pytest.fixture
def page(browser: BrowserContext) -> Iterator[Page]:
    browser.clear_cookies()
    page = browser.new_page()
    yield page
    page.close()


def sign_in(page: Page, url: str, user: str, password: str) -> None:
    """Open the site (it sends a visitor without a session to the sign-in page) and submit the form."""
    page.goto(url + "/", wait_until="domcontentloaded")
    expect(page.locator("#sign-in")).to_be_visible()
    page.fill("#account", "studio-a")
    page.fill("#user", user)
    page.fill("#password", password)
    page.click("#sign-in")


def generate(studio: StudioPage, prompt: str):
    studio.type_prompt(prompt)
    studio.choose("resolution", SMALL)
    studio.set_slider("steps", 2)
    return studio.run_job(JOB_TIMEOUT_MS)


def test_signed_in_page_survives_its_web_front_s_death(page: Page, cluster: LaunchedCluster) -> None:
    wait_until(lambda: all(status_is_up(cluster.server_status(node, "web")) for node in cluster.node_names),
               "every web front UP", 60, 0.1)
    sign_in(page, cluster.public_url, "alice", PASSWORD)
    studio = StudioPage(page, cluster.public_url + "/", "sign-in").open()  # the studio, not the sign-in page
    [cookie] = [c for c in page.context.cookies() if c["name"] == SESSION_COOKIE]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and not cookie["secure"]  # plain http here
    first = generate(studio, "a portrait before the web front dies")
    victim = cluster.node_of("web", first.web_node)
    cluster.kill(victim, "web")
    wait_until(lambda: status_is_out(cluster.server_status(victim, "web")), f"{victim}/web out", 20, 0.1)

    studio.open()  # a reload: still signed in, on the other front
    second = generate(studio, "a portrait after the reload")
    assert second.web_node != first.web_node
    assert studio.gallery_image_sizes() == [(512, 512)] and studio.error_toasts() == []
    engine = make_engine(f"sqlite:///{cluster.run_dir / 'jobs.sqlite3'}")
    try:
        with engine.connect() as connection:
            account = connection.execute(select(accounts.c.id).where(accounts.c.name == "studio-a")).scalar_one()
            owners = connection.execute(select(jobs.c.owner)).scalars().all()
    finally:
        engine.dispose()
    assert owners == [account, account]  # the signed-in member's account owns both jobs

    page.locator("#sign-out").click()
    expect(page.locator("#sign-in")).to_be_visible()
    page.goto(cluster.public_url + "/", wait_until="domcontentloaded")
    expect(page.locator("#sign-in")).to_be_visible()  # signed out: the studio sends them to sign in


def test_five_wrong_passwords_lock_the_name(page: Page, cluster: LaunchedCluster) -> None:
    for _ in range(5):
        sign_in(page, cluster.public_url, "bob", "not bob's password")
        expect(page.locator("#sign-in-error")).to_have_text("The account, name or password is not right.")
    sign_in(page, cluster.public_url, "bob", PASSWORD)  # the right one, too late
    expect(page.locator("#sign-in-error")).to_have_text("Too many failed sign-ins; try again in 15 minutes.")


def test_a_forged_cookie_or_identity_header_gets_the_sign_in_page(page: Page, cluster: LaunchedCluster) -> None:
    sign_in(page, cluster.public_url, "alice", PASSWORD)
    expect(page.locator("#prompt textarea")).to_be_visible()
    [cookie] = [c for c in page.context.cookies() if c["name"] == SESSION_COOKIE]
    fields = cookie["value"].split(".")
    edited = ".".join([*fields[:2], "Ym9i", *fields[3:]])  # the user field says bob; the signature is alice's
    page.context.clear_cookies()
    page.context.add_cookies([{**cookie, "value": edited}])
    page.goto(cluster.public_url + "/", wait_until="domcontentloaded")
    expect(page.locator("#sign-in")).to_be_visible()

    headers = {"Authorization": f"Session {cookie['value']}", "X-Remote-User": "alice", "Accept": "text/html"}
    answer = httpx.get(cluster.public_url + "/", headers=headers, follow_redirects=False, timeout=10)
    assert answer.status_code == 303 and answer.headers["location"].endswith("/sign-in")  # only the cookie counts


def test_an_admin_creates_a_key_on_the_account_page_and_its_revocation_holds(page: Page,
                                                                             cluster: LaunchedCluster) -> None:
    sign_in(page, cluster.public_url, "alice", PASSWORD)
    page.locator("#account-link").click()  # the studio's Account button
    page.fill("input[name=label]", "booking site")
    page.check("input[name=scope][value=history]")
    page.click("#create-key")
    expect(page.locator("#new-key-box")).to_contain_text("shown only this once")
    key = page.locator("#new-key").inner_text().strip()
    api = httpx.Client(base_url=cluster.public_url, headers={"Authorization": f"Bearer {key}"}, timeout=10)
    with api:
        assert api.get("/v1/jobs").status_code == 200  # the key works
        page.goto(cluster.public_url + "/account", wait_until="domcontentloaded")
        row = page.locator(f"#keys tr[data-prefix='{key[:PREFIX_LENGTH]}']")
        expect(row).to_contain_text("booking site")
        assert key not in page.content()  # shown once: never again
        row.locator("button.revoke").click()
        expect(row).to_contain_text("revoked")
        refused = api.get("/v1/jobs")
    assert refused.status_code == 401 and refused.json()["error"] == "revoked_api_key"
