"""The studio page in a real browser (headless Debian Chromium via Playwright) on a real cluster.

One cluster for the module: ``launch.py`` with HAProxy, the sidecar and 2 nodes on the fixed-latency
stand-in (``--model standin:SECONDS``: the subject is the page; its images are real PNGs of the asked
size, and a job's time does not depend on the machine's speed), on free loopback ports. The page is used
as a person would: typing, moving sliders and the resolution dropdown, uploading a photo, clicking; the
assertions read what the page shows (progress bar, gallery image, info line, error area, toasts).
Failover is checked as a person sees it: the worker running the page's job is SIGKILLed (by its PID from the
sidecar's status) and the page still shows a finished image; the web front the page talks
to is SIGKILLed and a reload brings the page back on the other front.

Screenshots of the key states go to ``test-artifacts/screenshots/`` (not committed).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image, ImageDraw
from playwright.sync_api import BrowserContext, expect, sync_playwright

from balancer.haproxy.process import status_is_out, status_is_up
from bench.harness.chromium import chromium_context
from bench.harness.launched_cluster import LaunchedCluster
from bench.harness.processes import Processes
from bench.harness.waiting import wait_until
from tests.browser import StudioPage
from tests.suite_cluster import suite_options
from webui.contract import FAULT_PROMPT_MARKER, FAULT_STEP_CPU_SECONDS, PERSISTENCE_COOKIE
from webui.worker.pipelines.standin import STANDIN_MODEL

pytestmark = pytest.mark.browser

JOB_TIMEOUT_MS = 120_000
"""Longest a generation may take to show up in the page (retries and restarts included)."""
RECOVERY_TIMEOUT = 120.0
"""Longest the sidecar may take to bring a killed node part back into rotation."""
SMALL = "Quick 512×512"


MODEL = "standin:1"
"""Every job takes a second, its steps spread over it: the page shows them one by one."""
SLOW_MARKER = "[[browser-slow]]"
"""A prompt with this is a long job: each step computes ``STEP_CPU_SECONDS`` of CPU time at least."""
STEP_CPU_SECONDS = 0.05
HEALTH = {"down_interval": 0.25}
"""A started or restarted part is checked every 0.25 s until UP: the subject is the page, not the check pace."""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LaunchedCluster]:
    """HAProxy + sidecar + 2 nodes on the stand-in (long jobs by ``SLOW_MARKER``)."""
    run_dir = tmp_path_factory.mktemp("browser-cluster")
    options = suite_options(model=MODEL, nodes=2, threads=1, sidecar={"probe_interval": 0.5},
                            worker_env={FAULT_STEP_CPU_SECONDS: str(STEP_CPU_SECONDS),
                                        FAULT_PROMPT_MARKER: SLOW_MARKER},
                            extra={"health": HEALTH})
    with Processes("browser-cluster") as processes:
        with LaunchedCluster(options, name="browser", processes=processes, run_dir=run_dir) as launched:
            yield launched


@pytest.fixture(scope="module")
def browser() -> Iterator[BrowserContext]:
    """Headless system Chromium with a fresh in-memory context."""
    with sync_playwright() as playwright, chromium_context(playwright) as context:
        context.set_default_timeout(30_000)
        yield context


def webs_up(cluster: LaunchedCluster) -> bool:
    """Every node's web front is UP in HAProxy."""
    return all(status_is_up(cluster.server_status(node, "web")) for node in cluster.node_names)


def new_visitor(browser: BrowserContext, cluster: LaunchedCluster, name: str) -> Iterator[StudioPage]:
    """The studio page in a new tab with no cookies (a new visitor)."""
    browser.clear_cookies()
    page = browser.new_page()
    yield StudioPage(page, cluster.public_url + "/", name).open()
    page.close()


@pytest.fixture
def studio(browser: BrowserContext, cluster: LaunchedCluster, request: pytest.FixtureRequest) -> Iterator[StudioPage]:
    """A new visitor's studio page; the cluster is whole first."""
    cluster.wait_all_up(RECOVERY_TIMEOUT)
    yield from new_visitor(browser, cluster, request.node.name)


@pytest.fixture
def studio_all_webs(browser: BrowserContext, cluster: LaunchedCluster,
                    request: pytest.FixtureRequest) -> Iterator[StudioPage]:
    """A new visitor's studio page once every web front is UP (a worker killed before may still be loading its
    model: the page's jobs go to the workers that are UP)."""
    wait_until(lambda: webs_up(cluster), "every web front UP", RECOVERY_TIMEOUT, 0.1)
    yield from new_visitor(browser, cluster, request.node.name)


def test_generate_shows_progress_then_image_with_info(studio: StudioPage, cluster: LaunchedCluster) -> None:
    studio.screenshot("1-page")
    # Before any job, the page names the loaded model (the demo model's caveat: test_web.py).
    note = studio.page.locator("#model-note")
    expect(note).to_contain_text(f"Model: {STANDIN_MODEL}", timeout=10_000)
    studio.type_prompt("studio portrait of a violinist, warm rim light")
    studio.choose("resolution", SMALL)
    studio.expect_slider("width", 512)
    studio.expect_slider("height", 512)
    studio.set_slider("steps", 12)
    guidance = studio.drag_slider("guidance", 0.1)
    assert guidance > 0, "dragging the guidance slider did not move it"
    studio.set_seed(4242)
    before = studio.summary_text()

    studio.start()
    studio.wait_for_step(1, JOB_TIMEOUT_MS)
    studio.screenshot("2-progress")
    summary = studio.wait_for_result(before, JOB_TIMEOUT_MS)
    studio.screenshot("3-result")

    fractions = studio.step_fractions()
    assert any(0 < step < total for step, total in fractions), f"no intermediate progress seen: {fractions}"
    assert {total for _, total in fractions} == {12}
    assert (summary.seed, summary.width, summary.height) == (4242, 512, 512)
    assert "12 steps" in summary.text and f"guidance {guidance:g}" in summary.text
    assert summary.worker_id in cluster.part_ids("worker").values()
    assert summary.web_node in cluster.part_ids("web").values()
    assert studio.gallery_image_sizes() == [(512, 512)]
    assert studio.error_toasts() == []
    expect(studio.component("error")).to_be_hidden()


def test_retouch_an_uploaded_photo(studio: StudioPage, tmp_path: Path) -> None:
    photo = tmp_path / "photo.png"
    image = Image.new("RGB", (320, 256), (200, 170, 150))
    ImageDraw.Draw(image).ellipse((110, 50, 210, 190), fill=(90, 60, 50))
    image.save(photo)

    studio.type_prompt("retouch: softer light, warmer skin")
    studio.set_slider("steps", 6)
    studio.open_tab("retouch")
    studio.upload_photo(photo)
    studio.set_slider("strength", 0.5)
    studio.screenshot("1-uploaded")
    before = studio.summary_text()
    studio.start("retouch-button")
    summary = studio.wait_for_result(before, JOB_TIMEOUT_MS)
    studio.screenshot("2-result")

    # The result keeps the photo's aspect (320:256), rounded to multiples of 16.
    assert summary.width % 16 == 0 and summary.height % 16 == 0
    assert abs(summary.width / summary.height - 320 / 256) < 0.05, summary.text
    assert studio.gallery_image_sizes() == [(summary.width, summary.height)]
    assert studio.error_toasts() == []


def test_bad_value_shows_a_readable_error(studio: StudioPage) -> None:
    studio.type_prompt("a portrait")
    studio.choose("resolution", SMALL)
    studio.type_prompt("")
    studio.start()
    error = studio.component("error")
    expect(error).to_be_visible(timeout=JOB_TIMEOUT_MS)
    studio.screenshot("error")
    message = error.inner_text()
    assert "prompt" in message, f"'prompt' missing from the error shown: {message!r}"
    assert "Traceback" not in studio.page_text()
    assert studio.gallery_count() == 0


def test_sizes_the_page_offers_are_sizes_the_model_takes(studio: StudioPage) -> None:
    # The model (Z-Image, as the stand-in says it is) needs multiples of 16: the size sliders step by the model's own
    # multiple (a typed size is rounded the same way by the handler: test_web.py).
    for elem_id in ("width", "height"):
        track = studio.component(elem_id).locator("input[type=range]")
        expect(track).to_have_attribute("step", "16", timeout=JOB_TIMEOUT_MS)
        expect(track).to_have_attribute("max", "2048")


def test_worker_killed_mid_job_page_still_shows_image(studio: StudioPage, cluster: LaunchedCluster) -> None:
    studio.type_prompt(f"long exposure portrait, for a worker that dies {SLOW_MARKER}")  # 2 s at least
    studio.choose("resolution", SMALL)
    studio.set_slider("steps", 40)
    studio.set_seed(777)
    before = studio.summary_text()

    studio.start()
    studio.wait_for_step(2, JOB_TIMEOUT_MS)  # mid-generation
    victim = cluster.busy_workers(timeout=10)[0]  # the page names no worker while it runs (the details view does)
    victim_id = cluster.part_ids("worker")[victim]
    cluster.kill(victim, "worker")
    studio.screenshot("1-worker-killed")
    summary = studio.wait_for_result(before, JOB_TIMEOUT_MS)
    studio.screenshot("2-finished-elsewhere")

    assert summary.seed == 777
    assert summary.worker_id != victim_id, "the job finished on the worker that was killed"
    assert re.search(r"\b[23] attempts", summary.text), summary.text
    assert studio.gallery_image_sizes() == [(512, 512)]
    assert studio.error_toasts() == []
    expect(studio.component("error")).to_be_hidden()


def test_web_front_killed_mid_job_page_shows_its_result_without_a_reload(studio_all_webs: StudioPage,
                                                                         cluster: LaunchedCluster) -> None:
    """The page's stream goes through the jobs service's relay, which joins its follow again on a live front."""
    studio = studio_all_webs
    prompt = f"a portrait whose web front dies {uuid.uuid4().hex[:8]} {SLOW_MARKER}"  # 2 s at least
    studio.type_prompt(prompt)
    studio.choose("resolution", SMALL)
    studio.set_slider("steps", 40)
    studio.set_seed(4321)
    before = studio.summary_text()

    studio.start()
    studio.wait_for_step(2, JOB_TIMEOUT_MS)
    victim = next(cookie["value"] for cookie in studio.page.context.cookies() if cookie["name"] == PERSISTENCE_COOKIE)
    studio.page.evaluate("window.beforeTheKill = true")  # gone if the page reloads
    cluster.kill(victim, "web")
    studio.screenshot("1-web-front-killed")
    summary = studio.wait_for_result(before, JOB_TIMEOUT_MS)
    studio.screenshot("2-finished-on-another-front")

    assert studio.page.evaluate("window.beforeTheKill === true"), "the page reloaded"
    assert summary.seed == 4321 and summary.web_node != victim, summary.text
    assert studio.gallery_image_sizes() == [(512, 512)]
    assert studio.error_toasts() == []
    expect(studio.component("error")).to_be_hidden()
    jobs = httpx.get(f"{cluster.public_url}/v1/jobs", params={"q": prompt.split(" [[")[0]}, timeout=30).json()["jobs"]
    assert len(jobs) == 1 and jobs[0]["status"] == "succeeded", jobs  # the same job, not made again


def test_web_front_killed_reload_works_on_other_front(studio_all_webs: StudioPage, cluster: LaunchedCluster) -> None:
    studio = studio_all_webs
    studio.type_prompt("first portrait before the web front dies")
    studio.choose("resolution", SMALL)
    studio.set_slider("steps", 4)
    first = studio.run_job(JOB_TIMEOUT_MS)
    victim = cluster.node_of("web", first.web_node)

    cluster.kill(victim, "web")
    wait_until(lambda: status_is_out(cluster.server_status(victim, "web")), f"{victim}/web out of rotation", 20, 0.1)
    studio.open()
    studio.screenshot("1-reloaded")
    studio.type_prompt("second portrait after the reload")
    studio.choose("resolution", SMALL)
    studio.set_slider("steps", 4)
    second = studio.run_job(JOB_TIMEOUT_MS)
    studio.screenshot("2-works-on-other-front")

    assert second.web_node != first.web_node
    assert studio.gallery_image_sizes() == [(512, 512)]
    assert studio.error_toasts() == []

