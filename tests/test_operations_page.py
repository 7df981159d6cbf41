"""The operations page (``GET /operations`` on the sidecar), in headless Chromium against the smallest cluster that
shows it: HAProxy and the sidecar supervising two real workers on the fixed-latency stand-in model (``standin:0.3``).
As the operator, the page shows both workers ready and the jobs done; a worker SIGKILLed by its PID shows as
restarted, with its cause, within 5 s (the page refreshes itself); its Drain button puts the node in HAProxy's
``drain`` and Ready back. Anyone without the stats page's password gets 401, and an action posted from another site
403. The history behind the plots and the escaping of the panel are checked in-process."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright
from playwright.sync_api import Error as PlaywrightError

from balancer.api.haproxy_view import Answers, HAProxyView
from balancer.api.ops_history import OpsHistory, Sample, increments
from balancer.api.ops_panel import panel_html
from balancer.haproxy.runtime_protocol import ServerStatus
from bench.harness.chromium import chromium_path, launch_chromium_browser
from bench.harness.processes import Processes, free_port
from bench.harness.supervised import SupervisedCluster
from bench.harness.waiting import wait_until
from tests.balancer_helpers import STATS_PASSWORD
from tests.browser import SCREENSHOT_DIR

NODES = ("a", "b")
JOBS = 8
ADMIN = {"username": "admin", "password": STATS_PASSWORD}
"""The stats page's user and password: the operator's."""
SCREENSHOT = SCREENSHOT_DIR / "operations.png"
"""Where the test leaves the page as it was after the kill and the drain (docs/images/operations.png is a copy)."""
HISTORY_INTERVAL = 0.5
"""Seconds between the page's samples here, so that its plots have points within the test (a studio: 10 s)."""
SHOWN_WITHIN_MS = 5_000
"""The issue's bound: a killed worker's restart and cause on the page."""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SupervisedCluster]:
    """Two nodes, each a real worker on the stand-in model, supervised by the sidecar behind HAProxy."""
    nodes = [{"name": name, "worker": {"port": free_port(), "args": ["--model", "standin:0.3", "--threads", "1"]}}
             for name in NODES]
    with Processes("operations-page") as processes, SupervisedCluster(
            tmp_path_factory.mktemp("operations-page"), processes, nodes,
            sidecar={"history_interval": HISTORY_INTERVAL}) as supervised:
        for name in NODES:
            supervised.wait_ready(name, timeout=60)
        yield supervised


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if chromium_path() is None:
        pytest.skip("chromium is not installed: run scripts/setup.sh --dev")
    with sync_playwright() as playwright:
        browser = launch_chromium_browser(playwright)
        yield browser
        browser.close()


def run_jobs(cluster: SupervisedCluster, count: int) -> None:
    """``count`` generations through HAProxy's public REST path, more at once than there are workers."""
    def generate(index: int) -> int:
        answer = httpx.post(f"{cluster.spec.public.url}/generate", json={"prompt": f"a portrait {index}"}, timeout=30)
        return answer.status_code

    with ThreadPoolExecutor(len(NODES) * 2) as pool:
        assert list(pool.map(generate, range(count))) == [200] * count


def node_row(page: Page, node: str):
    return page.locator(f"#node-{node}")


def test_the_operator_sees_a_killed_workers_restart_and_its_cause_and_drains_a_node(
        cluster: SupervisedCluster, browser: Browser) -> None:
    run_jobs(cluster, JOBS)
    context = browser.new_context(http_credentials=ADMIN, viewport={"width": 1200, "height": 430})
    page = context.new_page()
    answer = page.goto(f"{cluster.sidecar_url}/operations")
    assert answer is not None and answer.status == 200
    expect(page.locator("#figure-workers .value")).to_have_text("2 / 2")
    expect(page.locator("#figure-done .value")).to_have_text(str(JOBS))
    for node in NODES:
        expect(node_row(page, node).locator(".state")).to_have_text("ready")

    victim = cluster.part("a")["pid"]
    os.kill(victim, signal.SIGKILL)
    killed = time.monotonic()
    expect(node_row(page, "a").locator(".causes")).to_contain_text("worker: killed by a signal",
                                                                    timeout=SHOWN_WITHIN_MS)
    expect(node_row(page, "a").locator(".causes")).to_contain_text("SIGKILL", timeout=SHOWN_WITHIN_MS)
    expect(node_row(page, "a").locator(".restarts")).to_have_text("1", timeout=SHOWN_WITHIN_MS)
    print(f"restart and cause shown {time.monotonic() - killed:.2f} s after the SIGKILL")

    node_row(page, "b").get_by_role("button", name="Drain").click()
    wait_until(lambda: cluster.api.server("workers", "b").status == "DRAIN", "b drained in HAProxy", 10)
    expect(node_row(page, "b")).to_have_attribute("data-admin", "drain")
    expect(page.locator("#message")).to_contain_text("b: drained")
    cluster.wait_ready("a", restarts=1)
    expect(node_row(page, "a").locator(".state")).to_have_text("ready")
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)

    node_row(page, "b").get_by_role("button", name="Ready").click()
    wait_until(lambda: cluster.api.server("workers", "b").status == "UP", "b back in HAProxy", 10)
    expect(node_row(page, "b")).to_have_attribute("data-admin", "ready")
    context.close()


@pytest.mark.parametrize("credentials", [None, {"username": "admin", "password": "not-the-password"}],
                         ids=["none", "wrong"])
def test_without_the_stats_password_the_page_and_its_actions_are_refused(
        cluster: SupervisedCluster, browser: Browser, credentials: dict[str, str] | None) -> None:
    context = browser.new_context(http_credentials=credentials)
    page = context.new_page()
    page.set_default_timeout(10_000)
    try:  # Chromium, given no credentials that pass, ends the navigation at the 401 challenge
        answer = page.goto(f"{cluster.sidecar_url}/operations")
        assert answer is not None and answer.status == 401
    except PlaywrightError as exc:
        assert "ERR_INVALID_AUTH_CREDENTIALS" in str(exc)
    context.close()
    auth = (credentials["username"], credentials["password"]) if credentials else None
    for path in ("/operations", "/operations/panel"):
        assert httpx.get(f"{cluster.sidecar_url}{path}", auth=auth, timeout=10).status_code == 401
    assert httpx.post(f"{cluster.sidecar_url}/drain/b", auth=auth, timeout=10).status_code == 401
    assert cluster.part("b")["admin"] == "ready"


@pytest.mark.parametrize("headers", [{"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"}])
def test_an_action_posted_from_another_site_is_refused(cluster: SupervisedCluster, headers: dict[str, str]) -> None:
    answer = httpx.post(f"{cluster.sidecar_url}/drain/b", headers=headers, auth=("admin", STATS_PASSWORD), timeout=10)
    assert answer.status_code == 403 and answer.json()["error"] == "cross_site"
    assert cluster.part("b")["admin"] == "ready"
    assert cluster.api.server("workers", "b").status == "UP"


def test_a_form_on_another_site_cannot_use_the_operators_password(cluster: SupervisedCluster, browser: Browser) -> None:
    """Chromium answers the sidecar's challenge with the operator's password for any page that posts to it."""
    context = browser.new_context(http_credentials=ADMIN)
    page = context.new_page()
    page.set_default_timeout(10_000)
    form = f'<form method="post" action="{cluster.sidecar_url}/drain/b"><button>Win a prize</button></form>'
    page.route("http://evil.example/", lambda route: route.fulfill(content_type="text/html", body=form))
    page.goto("http://evil.example/")
    with page.expect_response(lambda response: response.url.endswith("/drain/b")) as posted:
        page.get_by_role("button").click()
    assert posted.value.status == 403
    context.close()
    assert cluster.part("b")["admin"] == "ready"
    assert cluster.api.server("workers", "b").status == "UP"


def sample(at: float, done: int | None, failed: int | None = 0, ready: int = 2) -> Sample:
    return Sample(at, ready, 2, 0, 0, done, failed)


def test_the_history_keeps_the_last_hour_in_a_bounded_ring_and_counts_across_a_haproxy_restart() -> None:
    history = OpsHistory(read=None, interval=10, span=60)  # type: ignore[arg-type]
    for second in range(0, 200, 10):
        history.record(sample(second, done=second))
    assert len(history.samples) == 7
    figures = history.figures(sample(200, done=5))  # HAProxy restarted: its counter from 0 again
    assert [round(ago) for ago, _ in figures.series("workers_ready")] == [60, 50, 40, 30, 20, 10, 0]
    assert figures.done_last_hour == 10 * 5 + 5  # 140 -> 190 in steps of 10, then 5 since the restart
    assert increments([3, None, 5, 1, 4]) == [2, 1, 3]


def test_the_panel_escapes_what_it_shows_and_counts_the_workers_backend() -> None:
    rows = [{"pxname": "workers", "svname": "BACKEND", "qcur": "2", "hrsp_2xx": "7", "hrsp_5xx": "1"}]
    view = HAProxyView.from_stat(rows)
    assert view.answers["workers"] == Answers(7, 1)
    view = HAProxyView({("workers", "a"): ServerStatus("workers", "a", "UP", 1, 1, 9, 1)}, view.queued, view.answers)
    document = {"nodes": {"a": {"worker": {"state": "backoff", "admin": "ready", "restarts": 1, "last_cause": "crash",
                                           "last_detail": "<script>alert(1)</script>",
                                           "server": {"status": "MAINT"}}}}, "crash_looped": []}
    now = Sample.of(document, view, 10.0)
    assert (now.queued, now.running, now.done_total, now.failed_total, now.workers_ready) == (3, 1, 7, 1, 0)
    html = panel_html(document, OpsHistory(read=None).figures(now), 3600)  # type: ignore[arg-type]
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "worker: crashed" in html
