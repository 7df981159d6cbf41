"""The studio page in a studio's words, in a real browser: Retouch keeps the photo's size, a preset never drops a
typed prompt, a typed size shows as the model makes it, a picked size is in the sliders at once, an empty prompt is
refused once in plain words, and on a phone the newest result is on the first screen with nothing clipped.

Processes started by hand, as in ``tests/test_studio_history.py``: a fixed-latency stand-in worker (its PNGs have
the asked size), ``python -m jobs`` (SQLite) and one web front with ``--jobs-url``; one page for the module. Run
under the cluster lock: ``flock /tmp/ph-cluster.lock python -m pytest -q tests/test_studio_words.py``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from playwright.sync_api import Route, expect, sync_playwright

from bench.harness.chromium import chromium_context
from bench.harness.processes import Processes
from tests.browser import StudioPage
from tests.jobs_service import Part, worker
from tests.test_web_jobs import HEADERS, JOB_MS, web

pytestmark = pytest.mark.browser

DESKTOP = {"width": 1440, "height": 900}
PHONE = {"width": 390, "height": 844}
TYPED = "an old sailor with a white beard"
WORKER = "words-worker"
"""The module's stand-in worker's name (its node)."""

# Visible texts that are cut off: the text wider than a box that hides its overflow (its element's or an
# ancestor's), or sticking out of the window.
_CLIPPED = """
() => [...document.querySelectorAll(':is(#controls, #results) :is(label, button, span, p)')]
  .filter(e => e.getClientRects().length && e.innerText.trim() && !e.closest('.visually-hidden'))  // no copies
  .filter(e => {
    const text = document.createRange();
    text.selectNodeContents(e);
    const box = text.getBoundingClientRect();  // the text itself, however wide its element is
    if (box.right > window.innerWidth + 1 || box.left < -1) return true;
    for (let up = e; up && !up.matches('.gradio-container'); up = up.parentElement) {
      const style = getComputedStyle(up);
      if (style.overflowX === 'visible' || style.display === 'contents') continue;
      const outer = up.getBoundingClientRect();
      if (box.right > outer.right + 1 || box.left < outer.left - 1) return true;
    }
    return false;
  })
  .map(e => `${e.tagName.toLowerCase()} "${e.innerText.trim().slice(0, 40)}"`)
"""


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StudioPage]:
    store = tmp_path_factory.mktemp("studio-words") / "jobs.sqlite3"
    with Processes("studio-words") as processes:
        standin = worker(processes, WORKER, 0.3).start()
        jobs = Part(processes, ["python", "-m", "jobs", "--store-url", f"sqlite:///{store}", "--worker-queue-url",
                                standin.url, "--run-dir", str(store.parent)], "words-jobs").start()
        front = web(processes, "words-web", jobs, standin).start()
        standin.ready("/readyz")
        jobs.ready("/healthz")
        front.ready("/readyz")
        with sync_playwright() as playwright, chromium_context(playwright) as context:
            context.set_default_timeout(30_000)
            context.set_extra_http_headers(HEADERS)
            page = context.new_page()
            page.set_viewport_size(DESKTOP)
            yield StudioPage(page, front.url + "/", "words").open()


def prompt_box(studio: StudioPage):  # noqa: ANN201 - a Playwright Locator
    return studio.component("prompt").locator("textarea")


def test_retouch_keeps_the_photos_size_and_hides_the_size_controls(studio: StudioPage, tmp_path: Path) -> None:
    photo = tmp_path / "photo.jpg"
    Image.new("RGB", (1200, 1600), (190, 160, 140)).save(photo, quality=90)
    studio.type_prompt("softer light, warmer skin")
    studio.set_slider("steps", 8)
    studio.open_tab("retouch")
    expect(studio.component("width")).to_be_hidden()
    expect(studio.component("height")).to_be_hidden()
    expect(studio.component("resolution")).to_be_hidden()
    studio.upload_photo(photo)
    expect(studio.component("retouch-size")).to_contain_text("1200×1600")
    studio.set_slider("strength", 0.6)

    summary = studio.run_job(JOB_MS, "retouch-button")
    assert (summary.width, summary.height) == (1200, 1600), summary.text
    assert studio.gallery_image_sizes() == [(1200, 1600)]
    # 8 steps at strength 0.6 run 5: the progress bar and the line under the result say the same.
    assert {total for _, total in studio.step_fractions()} == {5}, studio.progress_log()
    # Staff's words: the bar says it is denoising, and names no worker (that is in Generation details).
    denoising = [text for text in studio.progress_log() if "steps" in text]
    assert denoising and all("Denoising" in text and WORKER not in text for text in denoising), denoising
    assert WORKER in studio.details_text(summary.seed)
    assert "5 of 8 steps" in summary.text, summary.text
    studio.open_tab("create")
    expect(studio.component("width")).to_be_visible()


def test_a_preset_keeps_a_typed_prompt_says_what_it_changed_and_can_be_undone(studio: StudioPage) -> None:
    studio.open()
    studio.type_prompt(TYPED)
    studio.choose("preset", "Social avatar")
    expect(prompt_box(studio)).to_have_value(re.compile(rf"^close-up portrait of {TYPED},"))
    note = studio.component("preset-description")  # beside the menu: the controls it changed may be off screen
    expect(note).to_contain_text("yours kept in it")
    expect(note).to_contain_text("size Square 1024×1024")
    expect(note).to_contain_text("4 images")
    studio.expect_slider("num-images", 4)

    subject = studio.component("subject").locator("textarea, input").first
    subject.press_sequentially("a young chef")  # typed after the preset: it goes into the prompt
    expect(prompt_box(studio)).to_have_value(re.compile(r"^close-up portrait of a young chef,"))

    studio.component("undo-preset").click()
    expect(prompt_box(studio)).to_have_value(TYPED)
    studio.expect_slider("num-images", 1)
    expect(studio.component("undo-preset")).to_be_hidden()


def test_a_typed_size_shows_the_size_the_model_makes(studio: StudioPage) -> None:
    studio.open()
    for elem_id, typed, snapped in (("width", 600, 608), ("height", 900, 896)):
        number = studio.component(elem_id).locator("input[type=number]")
        number.fill(str(typed))
        number.press("Tab")
        expect(number).to_have_value(str(snapped))
        studio.expect_slider(elem_id, snapped)
    expect(studio.component("size-note")).to_contain_text("608×896")
    expect(studio.component("resolution").locator("input")).to_have_value("Custom")


def test_a_picked_size_is_in_the_sliders_at_once_without_the_web_front(studio: StudioPage) -> None:
    """A Generate clicked right after a size pick gets that size: the pick needs no answer from the web front
    (here its answers are held back), so no click can overtake it."""
    studio.open()
    held: list[Route] = []
    studio.page.route("**/gradio_api/**", lambda route: held.append(route))  # a web front not answering yet
    try:
        studio.choose("resolution", "Quick 512×512")
        for side in ("width", "height"):
            expect(studio.component(side).locator("input[type=range]")).to_have_value("512", timeout=5_000)
        studio.choose("resolution", "Custom")  # a size of its own: the sliders stay as they are
        studio.expect_slider("width", 512)
    finally:
        studio.page.unroute("**/gradio_api/**")  # the held requests go on now
    studio.open()


def test_an_empty_prompt_is_refused_once_in_plain_words(studio: StudioPage) -> None:
    studio.open()
    studio.type_prompt("")
    studio.start()
    error = studio.component("error")
    expect(error).to_contain_text("Write a prompt first")
    text = studio.page_text()
    assert text.count("Write a prompt first") == 1, text
    assert "String should" not in text and "Traceback" not in text
    assert studio.error_toasts() == []


def test_on_a_phone_the_newest_result_is_on_the_first_screen(studio: StudioPage) -> None:
    studio.page.set_viewport_size(PHONE)
    studio.open()
    studio.type_prompt("a violinist in warm rim light")
    studio.choose("resolution", "Portrait 768×1024")
    studio.start()
    expect(studio.component("gallery").locator("img").first).to_be_visible(timeout=JOB_MS)
    studio.wait_idle(JOB_MS)
    studio.page.evaluate("() => window.scrollTo(0, 0)")
    height = PHONE["height"]
    for elem_id in ("prompt", "generate", "progress"):
        box = studio.component(elem_id).bounding_box()
        assert box is not None and 0 <= box["y"] and box["y"] + box["height"] <= height, (elem_id, box)
    newest = studio.component("gallery").locator("img").first.bounding_box()
    assert newest is not None and 0 <= newest["y"] and newest["y"] + newest["height"] <= height, newest
    assert studio.page.evaluate("() => document.documentElement.scrollWidth") <= PHONE["width"]
    studio.component("settings").scroll_into_view_if_needed()
    assert studio.page.evaluate(_CLIPPED) == []
