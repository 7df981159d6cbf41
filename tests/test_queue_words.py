"""A waiting job's place in words (``webui.web.studio.queue_words``): what the page and gradio_client show."""

from __future__ import annotations

import pytest

from webui.web.studio.queue_words import place_words, queued_words


@pytest.mark.parametrize(("ahead", "wait_s", "words"), [
    (2, 20, "2 jobs ahead of yours, about 20 s"),
    (1, 11, "1 job ahead of yours, about 11 s"),
    (0, 4, "Yours is next, about 4 s"),
    (0, 0, "Yours is next"),
    (3, None, "3 jobs ahead of yours"),
    (40, 600, "40 jobs ahead of yours, about 10 min"),
])
def test_a_place_in_words(ahead: int, wait_s: int | None, words: str) -> None:
    assert place_words(ahead, wait_s) == words


def test_a_queued_event_without_a_place_has_no_words() -> None:
    assert queued_words({"status": "starting", "queue_position": None, "wait_s": None}) is None
    assert queued_words({"status": "processing", "queue_position": 1, "wait_s": 9}) == "1 job ahead of yours, about 9 s"
