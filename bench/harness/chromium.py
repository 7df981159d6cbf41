"""The system Chromium through Playwright: headless Debian Chromium (``/usr/bin/chromium``, or ``$CHROMIUM``; never
a Playwright browser download), for the browser tests (``tests/browser.py``) and the benchmarks that drive a page.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

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


def launch_chromium(playwright: Playwright, profile_dir: Path) -> BrowserContext:
    """Headless system Chromium with a fresh profile in ``profile_dir``; close the context when done."""
    return playwright.chromium.launch_persistent_context(
        str(profile_dir),
        executable_path=_executable(),
        headless=True,
        args=CHROMIUM_ARGS,
        viewport={"width": 1400, "height": 1100},
        accept_downloads=False,
    )
