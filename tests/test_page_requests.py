"""``tests.page_requests``: a tab's page load that stalls names what it still waits for and what failed."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from playwright.sync_api import sync_playwright

from bench.harness.chromium import chromium_context
from bench.harness.processes import free_port
from tests.page_requests import PageRequests

pytestmark = pytest.mark.browser

HELD_S = 20.0
"""The longest the server holds the stalled script (the test lets it go at its end)."""


@pytest.fixture
def site() -> Iterator[str]:
    """A page whose script the server holds back, and whose style sheet is on a port where nothing listens."""
    release = threading.Event()
    page = (f'<link rel="stylesheet" href="http://127.0.0.1:{free_port()}/gone.css">'
            '<script src="/held.js"></script>').encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            held = self.path == "/held.js"
            if held:
                release.wait(HELD_S)
            self.send_response(200)
            self.send_header("content-type", "application/javascript" if held else "text/html")
            self.send_header("content-length", "0" if held else str(len(page)))
            self.end_headers()
            if not held:
                self.wfile.write(page)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/"
    finally:
        release.set()
        server.shutdown()
        server.server_close()


def test_a_stalled_load_names_the_request_it_waits_for_and_the_one_that_failed(site: str) -> None:
    with sync_playwright() as playwright, chromium_context(playwright) as context:
        page = context.new_page()
        requests = PageRequests(page)
        page.goto(site, wait_until="commit")
        for _ in range(100):  # Playwright delivers a tab's events while the test calls into it
            if requests.failed and requests.finished:
                break
            page.wait_for_timeout(100)
        summary = requests.summary()
        requests.stop()
    assert re.fullmatch(r"\d+ requests answered; still outstanding \(\d+\): (.*); failed \(1\): (.*)", summary), summary
    outstanding, failed = summary.split("still outstanding")[1].split("; failed")
    assert "/held.js" in outstanding and "/gone.css (net::ERR_CONNECTION_REFUSED)" in failed, summary
