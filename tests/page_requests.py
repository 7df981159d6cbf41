"""What a browser tab asked for and has not had yet: the words of a failed page load.

A studio page that does not draw its controls is waiting for something: a script, a style sheet, the page's
config. ``PageRequests`` records a tab's requests while it loads, so that the failure can name what was still
outstanding (and what failed) instead of only "element not found".
"""

from __future__ import annotations

from urllib.parse import urlsplit

from playwright.sync_api import Page, Request

LISTED = 8
"""The most requests named in a summary, per kind."""


class PageRequests:
    """The requests ``page`` makes from now until ``stop()``: those still outstanding and those that failed."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.outstanding: dict[Request, None] = {}
        self.failed: list[str] = []
        self.finished = 0
        page.on("request", self._sent)
        page.on("requestfinished", self._finished)
        page.on("requestfailed", self._failed)

    def _sent(self, request: Request) -> None:
        self.outstanding[request] = None

    def _finished(self, request: Request) -> None:
        self.outstanding.pop(request, None)
        self.finished += 1

    def _failed(self, request: Request) -> None:
        self.outstanding.pop(request, None)
        self.failed.append(f"{_path(request)} ({request.failure})")

    def stop(self) -> None:
        self.page.remove_listener("request", self._sent)
        self.page.remove_listener("requestfinished", self._finished)
        self.page.remove_listener("requestfailed", self._failed)

    def summary(self) -> str:
        """``N requests answered; still outstanding: …; failed: …`` (an open event stream is outstanding too)."""
        waiting = [_path(request) for request in self.outstanding]
        return (f"{self.finished} requests answered; still outstanding ({len(waiting)}): "
                f"{', '.join(waiting[:LISTED]) or 'none'}; failed ({len(self.failed)}): "
                f"{', '.join(self.failed[:LISTED]) or 'none'}")


def _path(request: Request) -> str:
    parts = urlsplit(request.url)
    return parts.path + (f"?{parts.query[:40]}" if parts.query else "")
