"""When a studio tab is ready: its prompt box shows once Gradio drew the page's controls."""

from __future__ import annotations

import time

from playwright.sync_api import Page
from playwright.sync_api import TimeoutError as PlaywrightTimeout

READY = "#prompt textarea"
"""The studio's prompt box: shown once Gradio drew the page's controls."""


def ready_after(page: Page, wait_s: float) -> float | None:
    """Seconds until the tab's controls show, or None when they did not within ``wait_s``."""
    began = time.monotonic()
    try:
        page.locator(READY).wait_for(state="visible", timeout=wait_s * 1000)
    except PlaywrightTimeout:  # the page still says "Loading..."
        return None
    return time.monotonic() - began


def ready_row(label: str, seconds: float | None, wait_s: float) -> list[str]:
    """A table row: the tab, whether its controls showed, and when."""
    return [label, "ready", f"{seconds:.1f}"] if seconds is not None else [label, f"not within {wait_s:g} s", ""]
