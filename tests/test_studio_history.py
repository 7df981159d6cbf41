"""The studio's History in a real browser: three generations, a reload, and the History lists them newest first
with thumbnails and their settings; "Use these settings" fills the form; the filters narrow it; Delete (asked
twice) removes the job from the page and from the jobs service. An opened batch's image 3 is made again alone,
with the same pixels, and image 2 goes into the Retouch tab. A retouch comes back with its photo, the same bytes,
and is made again from them. A site login that is a member of an account past its
daily image quota is told so beside the form, in the quota's words, and keeps what it typed; so is its gradio_client.

Processes started by hand, as in ``tests/test_web_jobs.py``: a stand-in worker, ``python -m jobs`` (SQLite) and
one web front with ``--jobs-url``. The browser sends ``/v1/jobs/...`` (the thumbnails) to the jobs service, as
HAProxy does in a cluster. Run under the cluster lock: ``flock /tmp/ph-cluster.lock python -m pytest -q
tests/test_studio_history.py``.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError
from PIL import Image
from playwright.sync_api import BrowserContext, Route, expect, sync_playwright

from bench.harness.chromium import chromium_context
from bench.harness.processes import Processes
from bench.harness.waiting import wait_until
from tests.browser import StudioPage
from tests.jobs_service import JOB, WAIT, Part, accounts_cli, worker
from tests.test_web_jobs import HEADERS, JOB_MS, web
from webui.web.studio.config import CUSTOM

pytestmark = pytest.mark.browser

PRESET = "Social avatar"
PRESET_SIZE = "Square 1024×1024"
"""The preset's size, as the Resolution menu names it."""
SMALL = "Quick 512×512"
PROMPTS = ("history portrait one", "history portrait two", "history portrait three")
BATCH = "history batch of three"
RETOUCHED = "history retouch, warm light"
MEMBER = {"Authorization": "Basic " + base64.b64encode(b"quota-member:any").decode()}
"""A site login (HAProxy checked its password) that is a member of an account with a daily quota."""


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("studio-history") / "jobs.sqlite3"


@pytest.fixture(scope="module")
def site(store: Path) -> Iterator[dict[str, Part]]:
    with Processes("studio-history") as processes:
        standin = worker(processes, "history-worker", 0.3).start()
        jobs = Part(processes, ["python", "-m", "jobs", "--store-url", f"sqlite:///{store}", "--worker-queue-url",
                                standin.url, "--run-dir", str(store.parent), "--site-login"], "history-jobs").start()
        front = web(processes, "history-web", jobs, standin).start()
        standin.ready("/readyz")
        jobs.ready("/healthz")
        yield {"jobs": jobs.ready("/healthz"), "web": front.ready("/readyz")}


@pytest.fixture(scope="module")
def browser(site: dict[str, Part]) -> Iterator[BrowserContext]:
    def to_jobs(route: Route) -> None:  # HAProxy's /v1/jobs route
        path = route.request.url.split("/v1/jobs", 1)[1]
        answer = httpx.get(f"{site['jobs'].url}/v1/jobs{path}", headers=HEADERS, timeout=WAIT)
        route.fulfill(status=answer.status_code, body=answer.content, headers=dict(answer.headers))

    with sync_playwright() as playwright, chromium_context(playwright) as context:
        context.set_default_timeout(30_000)
        context.set_extra_http_headers(HEADERS)
        context.route("**/v1/jobs/**", to_jobs)
        yield context


def cards(studio: StudioPage) -> list[str]:
    return studio.component("history-cards").locator(".history-card").all_inner_texts()


def settings(studio: StudioPage, prompt: str) -> dict:
    """The opened job's settings, once they are the job with ``prompt``'s."""
    expect(studio.component("history-settings")).to_contain_text(prompt, timeout=JOB_MS)
    return json.loads(studio.component("history-settings").locator("pre, .json-holder").first.inner_text())


def test_three_generations_are_in_the_history_after_a_reload(site: dict[str, Part], browser: BrowserContext) -> None:
    studio = StudioPage(browser.new_page(), site["web"].url + "/", "history").open()
    seeds = []
    for number, prompt in enumerate(PROMPTS):
        if number == 0:
            studio.choose("preset", PRESET)
            studio.choose("resolution", SMALL)  # the preset's four 1024² images are CPU seconds a job
            studio.set_slider("num-images", 1)
        studio.type_prompt(prompt)
        seeds.append(studio.run_job(JOB_MS).seed)
    studio.open()
    studio.page.get_by_text("History", exact=True).click()
    expect(studio.component("history-cards").locator(".history-card")).to_have_count(3, timeout=JOB_MS)
    shown = cards(studio)
    assert [next(p for p in PROMPTS if p in text) for text in shown] == list(PROMPTS[::-1]), shown
    assert PRESET in shown[2] and "succeeded" in shown[0]
    assert "/thumbnails/0" in (studio.component("history-cards").locator("img").first.get_attribute("src") or "")
    studio.page.wait_for_function("() => [...document.querySelectorAll('#history-cards img')]"
                                  ".every(i => i.complete && i.naturalWidth > 0 && i.naturalWidth <= 256)")

    studio.component("history-cards").locator(".history-card").nth(2).click()
    first = settings(studio, PROMPTS[0])
    assert first["prompt"] == PROMPTS[0] and first["seed"] == seeds[0] and first["preset"] == PRESET
    expect(studio.component("history-details")).to_contain_text("image 1")
    studio.type_prompt("something else")
    studio.choose("resolution", PRESET_SIZE)
    studio.component("history-use").click()
    expect(studio.component("prompt").locator("textarea")).to_have_value(PROMPTS[0])
    studio.expect_slider("width", 512)
    expect(studio.component("resolution").locator("input")).to_have_value(SMALL)  # the menu follows the size
    expect(studio.component("seed").locator("input")).to_have_value(str(seeds[0]))
    expect(studio.component("seed-random").locator("input[type=checkbox]")).not_to_be_checked()

    studio.component("history-text").locator("textarea, input").first.fill("TWO")
    studio.component("history-search").click()
    expect(studio.component("history-cards").locator(".history-card")).to_have_count(1, timeout=JOB_MS)
    assert PROMPTS[1] in cards(studio)[0]
    studio.component("history-cards").locator(".history-card").first.click()
    assert settings(studio, PROMPTS[1])["prompt"] == PROMPTS[1]
    studio.component("history-delete").click()
    studio.component("history-confirm").click()
    expect(studio.component("history-note")).to_contain_text("Deleted job", timeout=JOB_MS)
    expect(studio.component("history-cards").locator(".history-card")).to_have_count(0)
    listed = httpx.get(f"{site['jobs'].url}/v1/jobs", headers=HEADERS, timeout=WAIT).json()["jobs"]
    assert [job["input"]["prompt"] for job in listed] == [PROMPTS[2], PROMPTS[0]]


def pixels(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as image:
        return np.asarray(image.convert("RGB"))


def result(site: dict[str, Part], job: dict, index: int) -> np.ndarray:
    answer = httpx.get(f"{site['jobs'].url}/v1/jobs/{job['id']}/results/{index}", headers=HEADERS, timeout=WAIT)
    return pixels(answer.raise_for_status().content)


def newer_finished(site: dict[str, Part], job_id: str) -> dict | None:
    """The newest job once it is another than ``job_id`` and has ended; None before."""
    newest = httpx.get(f"{site['jobs'].url}/v1/jobs?limit=1", headers=HEADERS, timeout=WAIT).json()["jobs"][0]
    return newest if newest["id"] != job_id and newest["status"] in ("succeeded", "failed", "canceled") else None


def open_newest(studio: StudioPage, text: str) -> None:
    """Open the History's newest job, once it is the one with ``text``."""
    studio.page.get_by_text("History", exact=True).click()
    newest = studio.component("history-cards").locator(".history-card").first
    expect(newest).to_contain_text(text, timeout=JOB_MS)
    newest.click()


def retouch_photo(studio: StudioPage) -> bytes:
    """The bytes of the photo the Retouch tab shows, once it shows one."""
    shown = studio.component("retouch-image").locator("img")
    expect(shown).to_be_visible(timeout=JOB_MS)
    return studio.page.request.get(shown.get_attribute("src") or "", headers=HEADERS).body()


def test_an_image_of_a_batch_is_made_again_alone_and_retouched(site: dict[str, Part], browser: BrowserContext) -> None:
    """The stand-in's pixels depend on the seed (images 1 and 3 differ): the same pixels prove the same recipe."""
    studio = StudioPage(browser.new_page(), site["web"].url + "/", "history-again").open()
    studio.type_prompt(BATCH)
    for elem_id, value in (("width", 256), ("height", 256), ("num-images", 3)):
        studio.set_slider(elem_id, value)
    batch = studio.run_job(JOB_MS)
    open_newest(studio, BATCH)
    expect(studio.component("history-image-3")).to_contain_text(f"Image 3 · seed {batch.seed + 2}", timeout=JOB_MS)
    expect(studio.component("history-again-4")).to_be_hidden()
    studio.screenshot("opened-batch")

    before = studio.summary_text()
    studio.type_prompt("another prompt, replaced by the image's own")
    studio.choose("resolution", SMALL)
    studio.component("history-again-3").click()
    again = studio.wait_for_result(before, JOB_MS)
    assert (again.seed, again.width, again.height, studio.gallery_count()) == (batch.seed + 2, 256, 256, 1)
    expect(studio.component("resolution").locator("input")).to_have_value(CUSTOM)  # 256×256 is no menu size
    made, original = httpx.get(f"{site['jobs'].url}/v1/jobs?limit=2", headers=HEADERS, timeout=WAIT).json()["jobs"]
    assert made["input"]["prompt"] == original["input"]["prompt"] == BATCH and made["input"]["num_images"] == 1
    assert np.array_equal(result(site, made, 0), result(site, original, 2))
    assert not np.array_equal(result(site, original, 0), result(site, original, 2))

    studio.type_prompt("yet another prompt")
    studio.component("history-retouch-2").click()
    expect(studio.component("retouch-tab")).to_be_visible(timeout=JOB_MS)
    expect(studio.component("prompt").locator("textarea")).to_have_value(BATCH)
    assert np.array_equal(pixels(retouch_photo(studio)), result(site, original, 1))
    expect(studio.component("width")).to_be_hidden()  # the Retouch tab's own controls


def photo_of(site: dict[str, Part], job: dict) -> bytes:
    """The photo a retouch job was given: its JSON names it by URL."""
    url = job["input"]["init_image"]
    assert url == f"/v1/jobs/{job['id']}/input", url
    return httpx.get(site["jobs"].url + url, headers=HEADERS, timeout=WAIT).raise_for_status().content


def test_a_retouch_comes_back_with_its_photo_and_is_made_again_from_the_same_bytes(
        site: dict[str, Part], browser: BrowserContext, tmp_path: Path) -> None:
    """A retouch job keeps the JPEG it was given (a camera's, made plain at upload): "Use these settings" puts it back
    into the Retouch tab, and "Make this image again" retouches it again from the very same bytes and seed."""
    camera = tmp_path / "camera.jpg"
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"  # metadata: the upload is made plain, not sent as it is
    pixels_in = np.random.default_rng(3).integers(0, 256, (900, 1200, 3), dtype=np.uint8)
    Image.fromarray(pixels_in).save(camera, quality=90, exif=exif.tobytes())
    studio = StudioPage(browser.new_page(), site["web"].url + "/", "history-retouch").open()
    studio.open_tab("retouch")
    studio.upload_photo(camera)
    studio.type_prompt(RETOUCHED)
    first = studio.run_job(JOB_MS, "retouch-button")
    open_newest(studio, RETOUCHED)
    expect(studio.component("history-again-retouch-1")).to_be_visible(timeout=JOB_MS)
    expect(studio.component("history-again-1")).to_be_hidden()

    studio.open_tab("create")
    studio.type_prompt("another prompt, replaced by the job's own")
    studio.component("history-use").click()
    expect(studio.component("retouch-tab")).to_be_visible(timeout=JOB_MS)
    expect(studio.component("prompt").locator("textarea")).to_have_value(RETOUCHED)
    original = httpx.get(f"{site['jobs'].url}/v1/jobs?limit=1", headers=HEADERS, timeout=WAIT).json()["jobs"][0]
    kept = photo_of(site, original)
    assert retouch_photo(studio) == kept
    studio.screenshot("retouch-settings-back")

    studio.type_prompt("yet another prompt")
    studio.component("history-again-retouch-1").click()
    # Same seed, size and settings: the page's summary reads as before, so the new job is found by its id.
    made = wait_until(lambda: newer_finished(site, original["id"]), "the retouch made again finished", WAIT)
    expect(studio.component("info-details")).to_contain_text(made["id"], timeout=JOB_MS)  # shown on the page
    assert made["status"] == "succeeded" and made["input"]["seed"] == first.seed, made
    assert photo_of(site, made) == kept  # the same JPEG, not one made from it again
    assert (made["input"]["prompt"], made["input"]["strength"]) == (RETOUCHED, original["input"]["strength"])
    assert np.array_equal(result(site, made, 0), result(site, original, 0))


def test_a_members_job_past_the_accounts_daily_quota_is_refused_in_words(
        site: dict[str, Part], browser: BrowserContext, store: Path) -> None:
    url = f"sqlite:///{store}"
    for args in (["create", "quota-studio"], ["set-limits", "quota-studio", "--daily-images", "2"],
                 ["add-member", "quota-studio", "quota-member"]):
        assert accounts_cli(url, *args).returncode == 0
    key = accounts_cli(url, "create-key", "quota-studio", "--scope=generate").stdout.strip()
    used = httpx.post(f"{site['jobs'].url}/v1/jobs", json={**JOB, "num_images": 2}, timeout=WAIT,
                      headers={**HEADERS, "Authorization": f"Bearer {key}"})  # the account's API uses the day's 2
    assert used.status_code == 202, used.text
    page = browser.new_page()  # the member's browser
    page.set_extra_http_headers({**HEADERS, **MEMBER})
    studio = StudioPage(page, site["web"].url + "/", "quota").open()
    studio.type_prompt("a portrait past the quota")
    studio.start()
    expect(studio.component("error")).to_have_text(
        "Could not generate: Daily quota of 2 images reached; resets at 00:00 UTC.", timeout=JOB_MS)
    expect(studio.component("prompt").locator("textarea")).to_have_value("a portrait past the quota")
    assert studio.error_toasts() == [] and studio.gallery_count() == 0
    client = Client(site["web"].url + "/", headers={**HEADERS, **MEMBER}, verbose=False, download_files=False)
    with pytest.raises(AppError) as caught:
        client.predict(prompt="a portrait through the API", api_name="/generate")
    assert str(caught.value) == "Daily quota of 2 images reached; resets at 00:00 UTC."
    mine = httpx.get(f"{site['jobs'].url}/v1/jobs", headers={**HEADERS, **MEMBER}, timeout=WAIT).json()["jobs"]
    assert mine == []  # refused, not recorded
