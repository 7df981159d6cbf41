"""A waiting job's place in words for a studio employee: "2 jobs ahead of yours, about 20 s".

The jobs service sends the place in its ``queued`` events (``queue_position``: jobs accepted before this one that
no worker runs yet, cluster-wide; ``wait_s``: about how many seconds until a worker runs it, unknown before the
first job finished). The page's progress line and ``gradio_client``'s progress both show these words.
"""

from __future__ import annotations

from typing import Any

MINUTE_FROM_S = 90
"""Waits from this long on are said in minutes."""


def about(seconds: int) -> str:
    """``about 20 s``, ``about 3 min``."""
    return f"about {seconds} s" if seconds < MINUTE_FROM_S else f"about {round(seconds / 60)} min"


def place_words(ahead: int, wait_s: int | None) -> str:
    """``2 jobs ahead of yours, about 20 s``; ``Yours is next, about 4 s``; without the time while it is unknown."""
    lead = "Yours is next" if ahead == 0 else f"{ahead} job{'' if ahead == 1 else 's'} ahead of yours"
    return lead if not wait_s else f"{lead}, {about(wait_s)}"


def queued_words(data: dict[str, Any]) -> str | None:
    """The words for a ``queued`` event's data; None when it carries no place (the job no longer waits)."""
    ahead = data.get("queue_position")
    if not isinstance(ahead, int):
        return None
    wait_s = data.get("wait_s")
    return place_words(ahead, wait_s if isinstance(wait_s, int) else None)
