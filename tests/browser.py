"""Real-browser helpers: the studio page object, and closing a test's tabs (Chromium itself is started by
``bench.harness.chromium``).

``StudioPage`` drives the studio page by the ``elem_id``s that ``webui/web/studio/layout.py`` gives its
components, the way a person would: typing, dragging sliders, picking from dropdowns, uploading a photo,
clicking, and reading what the page shows (progress bar, gallery, info line, error area, toasts).

Progress states are recorded in the page itself by a ``MutationObserver`` (installed by
``StudioPage.open``), so a short intermediate state is not missed between two polls.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from playwright.sync_api import Browser, BrowserContext, Locator, Page, expect
from playwright.sync_api import Error as PlaywrightError

from bench.harness.processes import REPO
from tests.page_requests import PageRequests

SCREENSHOT_DIR = REPO / "test-artifacts" / "screenshots"
UI_TIMEOUT_MS = 30_000
"""How long the page may take to react to a click or to load (not a generation)."""


def close_tabs(browser: Browser | BrowserContext) -> None:
    """Close every tab of ``browser`` (of each of its contexts). A studio tab keeps Gradio's streams open (heartbeat,
    queue data), and Chromium opens at most six HTTP/1.1 connections to one host: tabs a test left open can stall
    the next tab's load."""
    contexts = browser.contexts if isinstance(browser, Browser) else [browser]
    for page in [page for context in contexts for page in context.pages]:
        page.close()


_TRACKERS = '#gallery [data-testid="status-tracker"], #progress [data-testid="status-tracker"]'
"""The progress displays of the results column (Gradio status trackers)."""

# Records every text the status trackers of #gallery and #progress show while a job runs.
_PROGRESS_RECORDER = """
(selector) => {
  window.__progressLog = [];
  const record = () => {
    for (const tracker of document.querySelectorAll(selector)) {
      // Drop the elapsed-time counters so that each distinct state is logged once.
      const text = tracker.innerText.replace(/\\d+(\\.\\d+)?s\\b/g, '').replace(/\\s+/g, ' ').trim();
      if (text && !window.__progressLog.includes(text)) window.__progressLog.push(text);
    }
  };
  new MutationObserver(record).observe(document.body, {subtree: true, childList: true, characterData: true});
}
"""

_STEP_FRACTION = re.compile(r"(\d+)\s*/\s*(\d+)\s*steps")


@dataclass(frozen=True)
class Summary:
    """The info line under a result, parsed (seed, size), with the worker and web node from its details view."""

    text: str
    seed: int
    width: int
    height: int
    worker_id: str
    web_node: str

    @classmethod
    def parse(cls, text: str, details: str) -> Summary:
        """Parse ``Seed 123 · 512×512 · 8 steps · … · 1.2 s`` and its details' ``Worker: w1 · Web front: n1``."""
        seed = re.search(r"Seed\s+(\d+)", text)
        size = re.search(r"(\d+)\s*×\s*(\d+)", text)
        worker = re.search(r"Worker:\s*(\S+)", details)
        node = re.search(r"Web front:\s*(\S+)", details)
        if not (seed and size and worker and node):
            raise AssertionError(f"the info line or its details lack seed, size, worker or node: {text!r} {details!r}")
        return cls(text, int(seed[1]), int(size[1]), int(size[2]), worker[1], node[1])


class StudioPage:
    """The studio page in one browser tab, driven through its elem_ids."""

    def __init__(self, page: Page, base_url: str, screenshot_prefix: str) -> None:
        self.page = page
        self.base_url = base_url
        self.screenshot_prefix = screenshot_prefix

    # ------------------------------------------------------------------ navigation
    def open(self) -> StudioPage:
        """Load (or reload) the page and wait until the controls and the model note are there. A page that lost its
        web front reloads itself once one answers again (Gradio's reconnect): that load may take the place of ours."""
        requests = PageRequests(self.page)
        try:
            try:
                self.page.goto(self.base_url, wait_until="domcontentloaded", timeout=UI_TIMEOUT_MS)
            except PlaywrightError as error:
                if "ERR_ABORTED" not in str(error):
                    raise
                self.page.wait_for_load_state("domcontentloaded", timeout=UI_TIMEOUT_MS)
            expect(self.page.locator("#prompt textarea")).to_be_visible(timeout=UI_TIMEOUT_MS)
            expect(self.page.locator("#model-note")).to_contain_text("Model", timeout=UI_TIMEOUT_MS)
        except (AssertionError, PlaywrightError) as error:
            try:
                shot = f"screenshot {self.screenshot('open-failed').name}"
            except PlaywrightError:
                shot = "no screenshot"
            raise AssertionError(f"the studio page did not load ({shot}): {requests.summary()}") from error
        finally:
            requests.stop()
        self.page.evaluate(_PROGRESS_RECORDER, _TRACKERS)
        return self

    def screenshot(self, name: str) -> Path:
        """Save a full-page screenshot under test-artifacts/screenshots/."""
        SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOT_DIR / f"{self.screenshot_prefix}-{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    # ------------------------------------------------------------------ controls
    def component(self, elem_id: str) -> Locator:
        """The block of the component with this elem_id."""
        return self.page.locator(f"#{elem_id}")

    def type_prompt(self, text: str) -> None:
        """Type into the prompt box like a person (key presses, not a value assignment)."""
        box = self.component("prompt").locator("textarea")
        box.click()
        box.press("Control+A")
        box.press("Backspace")
        box.press_sequentially(text)
        expect(box).to_have_value(text)

    def set_slider(self, elem_id: str, value: float) -> None:
        """Type a value into a slider's number box and leave it; checks the slider moved."""
        number = self.component(elem_id).locator("input[type=number]")
        number.fill(str(value))
        number.press("Tab")
        self.expect_slider(elem_id, value)

    def drag_slider(self, elem_id: str, fraction: float) -> float:
        """Drag a slider's handle with the mouse to ``fraction`` of its track; the new value."""
        track = self.component(elem_id).locator("input[type=range]")
        track.scroll_into_view_if_needed()
        low, high, value = (float(v) for v in track.evaluate("e => [e.min, e.max, e.value]"))
        box = track.bounding_box()
        assert box is not None, f"slider #{elem_id} is not on screen"
        y = box["y"] + box["height"] / 2
        self.page.mouse.move(box["x"] + box["width"] * (value - low) / (high - low), y)
        self.page.mouse.down()
        self.page.mouse.move(box["x"] + box["width"] * fraction, y, steps=8)
        self.page.mouse.up()
        return float(track.input_value())

    def slider_value(self, elem_id: str) -> float:
        """The value a slider shows."""
        return float(self.component(elem_id).locator("input[type=range]").input_value())

    def expect_slider(self, elem_id: str, value: float) -> None:
        """Wait until a slider shows ``value`` (the page may update it asynchronously)."""
        expect(self.component(elem_id).locator("input[type=range]")).to_have_value(
            _slider_text(value), timeout=UI_TIMEOUT_MS
        )

    def choose(self, elem_id: str, option: str) -> None:
        """Pick ``option`` from a dropdown by clicking it open and clicking the option."""
        self.component(elem_id).locator("input").click()
        self.page.get_by_role("option", name=option, exact=True).click()
        expect(self.component(elem_id).locator("input")).to_have_value(option)

    def set_random_seed(self, random: bool) -> None:
        """Tick or untick the "Random" seed box."""
        self.component("seed-random").locator("input[type=checkbox]").set_checked(random)

    def set_seed(self, seed: int) -> None:
        """Use a fixed seed."""
        self.set_random_seed(False)
        box = self.component("seed").locator("input")
        box.fill(str(seed))
        box.press("Tab")

    def open_tab(self, tab_id: str) -> None:
        """Switch to the tab whose Gradio id is ``tab_id`` (``create`` or ``retouch``)."""
        self.page.locator(f"#mode-tabs [role=tab][data-tab-id='{tab_id}']").click()
        expect(self.component(f"{tab_id}-tab")).to_be_visible(timeout=UI_TIMEOUT_MS)

    def upload_photo(self, path: Path) -> None:
        """Upload a photo into the retouch tab and wait for its preview."""
        self.component("retouch-image").locator("input[type=file]").set_input_files(str(path))
        expect(self.component("retouch-image").locator("img")).to_be_visible(timeout=UI_TIMEOUT_MS)

    # ------------------------------------------------------------------ running jobs
    def start(self, button_id: str = "generate") -> None:
        """Click a job button (``generate`` or ``retouch-button``) and clear the progress log."""
        self.page.evaluate("() => { window.__progressLog = []; }")
        self.component(button_id).click()

    def run_job(self, timeout_ms: float, button_id: str = "generate") -> Summary:
        """Click a job button and wait for its result; the parsed info line."""
        before = self.summary_text()
        self.start(button_id)
        return self.wait_for_result(before, timeout_ms)

    def wait_for_step(self, at_least: int, timeout_ms: float) -> str:
        """Wait until the progress bar shows denoising step ``at_least`` (or later) of an unfinished job.

        Returns the first progress text that showed it, e.g. ``3/12 steps | Denoising``.
        """
        self.page.wait_for_function(
            """n => (window.__progressLog || []).some(t => {
                 const m = t.match(/(\\d+)\\s*\\/\\s*(\\d+)\\s*steps/);
                 return m !== null && +m[1] >= n && +m[1] < +m[2];
               })""",
            arg=at_least,
            timeout=timeout_ms,
        )
        return next(text for text in self.progress_log()
                    if (m := _STEP_FRACTION.search(text)) and at_least <= int(m[1]) < int(m[2]))

    def wait_for_result(self, previous_summary: str, timeout_ms: float) -> Summary:
        """Wait until the info line changes from ``previous_summary`` and the job is done; parse it."""
        summary = self.component("info-summary")
        expect(summary).not_to_have_text(previous_summary, timeout=timeout_ms)
        expect(summary).to_contain_text("Seed", timeout=timeout_ms)
        self.wait_idle(timeout_ms)
        text = summary.inner_text()
        seed = re.search(r"Seed\s+(\d+)", text)
        assert seed, text
        return Summary.parse(text, self.details_text(int(seed[1])))

    def details_text(self, seed: int) -> str:
        """The "Generation details" view (opened if closed) once it shows the result with ``seed``."""
        details = self.component("info-details")
        if not details.is_visible():
            self.component("details").get_by_text("Generation details").click()
        expect(details).to_contain_text(f"Seeds: {seed}", timeout=UI_TIMEOUT_MS)
        return details.inner_text()

    def wait_idle(self, timeout_ms: float) -> None:
        """Wait until no status tracker of the results column shows progress any more."""
        self.page.wait_for_function(
            "selector => [...document.querySelectorAll(selector)]"
            ".every(t => t.classList.contains('hide') || !t.innerText.trim())",
            arg=_TRACKERS,
            timeout=timeout_ms,
        )

    def progress_log(self) -> list[str]:
        """Every distinct progress text shown since the last ``start`` (timers removed), in order."""
        return self.page.evaluate("() => window.__progressLog || []")

    def step_fractions(self) -> list[tuple[int, int]]:
        """(step, total) pairs the progress bar showed since the last ``start``."""
        pairs = []
        for text in self.progress_log():
            match = _STEP_FRACTION.search(text)
            if match:
                pairs.append((int(match[1]), int(match[2])))
        return pairs

    def summary_text(self) -> str:
        """The info line as shown (empty before the first result)."""
        return self.component("info-summary").inner_text()

    def gallery_count(self) -> int:
        """How many images the gallery shows."""
        return self.component("gallery").locator("img").count()

    def gallery_image_sizes(self) -> list[tuple[int, int]]:
        """Natural (width, height) of every image the gallery shows, once they have loaded."""
        images = self.component("gallery").locator("img")
        expect(images.first).to_be_visible(timeout=UI_TIMEOUT_MS)
        self.page.wait_for_function(
            "() => [...document.querySelectorAll('#gallery img')].every(i => i.complete && i.naturalWidth > 0)",
            timeout=UI_TIMEOUT_MS,
        )
        return [tuple(size) for size in images.evaluate_all("els => els.map(i => [i.naturalWidth, i.naturalHeight])")]

    def error_toasts(self) -> list[str]:
        """Texts of the error and warning toasts on screen."""
        return self.page.locator(".toast-body.error, .toast-body.warning").all_inner_texts()

    def page_text(self) -> str:
        """All visible text of the page."""
        return self.page.locator("body").inner_text()


def _slider_text(value: float) -> str:
    """How a range input spells ``value`` (``8`` not ``8.0``)."""
    return f"{value:g}"
