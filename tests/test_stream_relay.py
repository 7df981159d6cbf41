"""The stream relay's own parts (``jobs.relay``): frames cut whole, the client's ids kept through adoptions, the
calls joined per session bounded. The relay in a cluster (a call whose web front is SIGKILLed mid-call, or before
its stream opened, gets its result with no resend and no second job) is tested in ``tests/test_jobs_cluster.py``.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from bench.harness.processes import REPO
from jobs.relay.calls import Calls
from jobs.relay.joins import MAX_CALLS, MAX_JOIN_KEPT, Joins
from jobs.relay.messages import Frames, FrameTooLarge, encoded, lost, parsed


def test_frames_are_cut_whole_whatever_the_chunks() -> None:
    stream = encoded({"msg": "estimation", "event_id": "e1"}) + b": a comment\n\n" + encoded({"msg": "heartbeat"})
    frames = Frames()
    cut = [frame for index in range(0, len(stream), 7) for frame in frames.feed(stream[index:index + 7])]
    assert [parsed(frame) for frame in cut] == [{"msg": "estimation", "event_id": "e1"}, None, {"msg": "heartbeat"}]
    with pytest.raises(FrameTooLarge):
        Frames().feed(b"data: " + b"x" * (4 * 1024 * 1024 + 1))


def test_an_adopted_call_keeps_the_clients_id_to_its_end() -> None:
    calls = Calls()
    assert calls.seen({"msg": "process_starts", "event_id": "e1"}) == {"msg": "process_starts", "event_id": "e1"}
    calls.seen({"msg": "progress", "event_id": "e2"})
    assert calls.waiting == {"e1", "e2"}
    calls.adopted("e1", "n1")  # its web front died: another follows its job as n1
    calls.adopted("e1", "m1")  # and that one died too
    assert calls.seen({"msg": "progress", "event_id": "m1"})["event_id"] == "e1"
    assert calls.seen({"msg": "progress", "event_id": "n1"})["event_id"] == "n1"  # an id nobody uses any more
    done = calls.seen({"msg": "process_completed", "event_id": "m1", "success": True})
    assert done["event_id"] == "e1" and calls.waiting == {"e2", "n1"}
    calls.ended("e2")
    assert calls.waiting == {"n1"} and calls.done == {"e1", "e2"}
    assert Calls(["j1"]).waiting == {"j1"}  # joined through the relay, before any message came
    message = parsed(encoded(lost("e2", "gone")).rstrip(b"\n"))
    assert message == {"msg": "process_completed", "event_id": "e2", "success": False,
                       "output": {"error": "gone", "title": "Generation failed", "visible": True}}


def test_the_calls_joined_per_session_are_bounded_and_forgotten_once_ended() -> None:
    joins = Joins()
    for n in range(MAX_CALLS + 5):
        joins.joined("s1", f"e{n}", b'{"fn_index": 1}')
    assert len(joins.of("s1")) == MAX_CALLS and joins.of("s1")[0] == "e5"  # the oldest went first
    assert joins.body("s1", "e6") == b'{"fn_index": 1}' and joins.body("s1", "e1") is None
    joins.joined("s2", "big", b"x" * (MAX_JOIN_KEPT + 1))
    assert joins.of("s2") == ("big",) and joins.body("s2", "big") is None  # its call is known, its join not kept
    for n in range(5, MAX_CALLS + 5):
        joins.ended("s1", f"e{n}")
    assert joins.of("s1") == () and joins.of("unknown") == ()


def test_the_jobs_service_loads_no_gradio() -> None:
    """The relay shares the web fronts' words for Gradio's ids (``webui.contract``), not their Gradio: importing it
    is about 1.3 s of CPU at every start of every jobs service."""
    script = ("import sys\nimport jobs.__main__\n"
              "print(sorted(name for name in ('gradio', 'gradio_client') if name in sys.modules))")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", done.stdout
