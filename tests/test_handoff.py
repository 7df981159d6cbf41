"""What a web front on jobs hands on to another one (``webui.web.handoff``), in process: no server needed."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
from fastapi import FastAPI

from webui.contract import READY_PATH
from webui.web.handoff import LINGER, Handoff, HandOn


def handoff(tmp_path: Path, calls: dict[str, int]) -> Handoff:
    """A front whose sessions are those in ``calls`` (with their calls under way here: 0 for one whose calls ended)."""
    return Handoff(lambda session: sum(calls.values()) if session is None else calls.get(session, 0),
                   tmp_path / "node1", lambda session: session in calls)


def test_an_event_stream_is_served_only_where_its_session_has_a_call(tmp_path: Path) -> None:
    front = handoff(tmp_path, {"abc": 1})
    assert front.refusal("/gradio_api/queue/data", "session_hash=abc") is None
    assert "No call of this session" in str(front.refusal("/gradio_api/queue/data", "session_hash=xyz"))
    # No id, or one that breaks the id rule: not handed on; the request guard answers it (422, invalid_id).
    assert front.refusal("/gradio_api/queue/data", "") is None
    assert front.refusal("/gradio_api/queue/data", "session_hash=..%2Fetc") is None
    assert front.refusal("/gradio_api/queue/data", f"session_hash={'a' * 65}") is None


def test_a_file_in_another_local_web_fronts_cache_is_handed_on(tmp_path: Path) -> None:
    front = handoff(tmp_path, {})
    assert front.refusal(f"/gradio_api/file={tmp_path / 'node1' / 'abc' / 'a.png'}", "") is None
    assert "another web front" in str(front.refusal(f"/gradio_api/file={tmp_path / 'node2' / 'abc' / 'b.png'}", ""))
    assert front.refusal("/gradio_api/file=/etc/passwd", "") is None  # not a cache: Gradio's own answer (403)


def test_a_session_of_this_front_between_two_calls_keeps_its_event_stream(tmp_path: Path) -> None:
    """A page opens its stream just after its last call ended (the answer to its join came after the stream that
    carried the result closed), and keeps it for its next call: refused, the page never heard a result again
    (Gradio's client took the stream as open). Only a stopping front hands such a stream on."""
    front = handoff(tmp_path, {"abc": 0})
    assert front.refusal("/gradio_api/queue/data", "session_hash=abc") is None
    front.closing = True
    assert "No call of this session" in str(front.refusal("/gradio_api/queue/data", "session_hash=abc"))


def test_a_stopping_front_refuses_new_calls_and_is_idle_once_its_calls_ended(tmp_path: Path) -> None:
    calls = {"abc": 1}
    front = handoff(tmp_path, calls)
    assert front.refusal("/gradio_api/queue/join", "") is None
    front.closing = True
    assert "stopping" in str(front.refusal("/gradio_api/queue/join", ""))
    assert "stopping" in str(front.refusal("/gradio_api/upload", "upload_id=1"))
    assert front.refusal("/gradio_api/queue/data", "session_hash=abc") is None  # its call goes on here
    front.last_request = time.monotonic() - 2 * LINGER
    assert not front.idle()
    calls["abc"] = 0
    assert front.idle()
    front.last_request = time.monotonic()  # its result's download
    assert not front.idle()


def test_probes_do_not_keep_a_stopping_front_from_exiting(tmp_path: Path) -> None:
    """HAProxy checks a web front every second or so: counted as requests, they kept a stopping front busy until
    its supervisor SIGKILLed it after the stop grace."""
    front = handoff(tmp_path, {})
    app = FastAPI()
    for path in (READY_PATH, "/config"):
        app.add_api_route(path, lambda: {}, methods=["GET"])
    guarded = HandOn(app, front)
    front.closing = True
    front.last_request = time.monotonic() - 2 * LINGER

    async def get(path: str) -> int:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=guarded), base_url="http://web") as client:
            return (await client.get(path)).status_code

    assert asyncio.run(get(READY_PATH)) == 200
    assert front.idle()  # a probe: still idle
    assert asyncio.run(get("/config")) == 200
    assert not front.idle()  # a client's request: it waits LINGER s more
