"""The system Chromium through Playwright: headless Debian Chromium (``/usr/bin/chromium``, or ``$CHROMIUM``; never
a Playwright browser download), for the browser tests (``tests/browser.py``) and the benchmarks that drive a page.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager

from playwright.sync_api import Browser, BrowserContext, Playwright

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-quic",
    "--disable-sync",
]


def chromium_path() -> str | None:
    """The system Chromium: ``$CHROMIUM`` or ``chromium`` on PATH (Debian's package)."""
    return os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def _executable() -> str:
    executable = chromium_path()
    if executable is None:
        raise FileNotFoundError("chromium is not installed: run scripts/setup.sh --dev")
    return executable


def launch_chromium_browser(playwright: Playwright) -> Browser:
    """Headless system Chromium for several contexts, each with its own cookies and credentials
    (``browser.new_context(http_credentials=...)``); close the browser when done."""
    return playwright.chromium.launch(executable_path=_executable(), headless=True, args=CHROMIUM_ARGS)


@contextmanager
def chromium_context(playwright: Playwright) -> Iterator[BrowserContext]:
    """Headless system Chromium with one fresh in-memory context (Chromium's incognito: cookies, storage and the
    HTTP cache in memory); the browser is closed on exit.

    In memory, not a profile on disk: a tab's page load waits on the HTTP cache, so a disk that stalls (``fsfreeze``
    on a profile's file system, say) stalls every load of a persistent profile; an in-memory context loads the same
    page in about a second (``bench.browser_disk_stall``)."""
    browser = launch_chromium_browser(playwright)
    try:
        yield browser.new_context(viewport={"width": 1400, "height": 1100}, accept_downloads=False)
    finally:
        browser.close()
