"""The web front's own edge (issue 18, round 2): only the Gradio routes the product uses, bounded
per-client state, and the curl-style API's streams counted as listening.

Cluster tests go through HAProxy's public port of the session's shared cluster (``tests/shared_cluster.py``:
``python launch.py``, stand-in nodes, a 1 s listen grace); the curl-style calls run a slow job (the shared
cluster's slow marker: it lasts at least twice the grace on any CPU), so a job whose client is not seen
listening would be cancelled long before it could finish. In-process tests
drive the real Gradio app ``create_app`` builds (no sockets) and the bounded classes directly,
with small bounds, to show what a flood of hostile ids leaves behind.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import gradio.routes
import httpx
import pytest
from PIL import Image

from bench.harness.generation import Job
from bench.harness.gradio_api_client import GradioApiClient
from bench.harness.launched_cluster import LaunchedCluster
from tests.helpers import FakeClock
from tests.shared_cluster import LISTEN_GRACE, SLOW_MARKER, STEP_CPU_SECONDS
from webui.contract import JOB_EVENT_INDICES
from webui.settings import WebSettings
from webui.web.bounded import BoundedMap
from webui.web.presence import EventStreams
from webui.web.session_jobs import MAX_JOINS, AwaitedStreams
from webui.web.upload_progress import BoundedUploadProgress, install

JOB = Job(prompt="edge portrait", steps=4, width=128, height=128, seed=61_803)
GENERATE_ARGS = [JOB.prompt, "", JOB.steps, None, JOB.width, JOB.height, JOB.seed, 1.0, 1]
SLOW_STEPS = int(2 * LISTEN_GRACE / STEP_CPU_SECONDS)
SLOW_SECONDS = SLOW_STEPS * STEP_CPU_SECONDS
"""A slow job (``SLOW_MARKER``) of ``SLOW_STEPS`` steps takes at least this long: twice the listen grace."""
SLOW_ARGS = [f"{JOB.prompt} {SLOW_MARKER}", "", SLOW_STEPS, *GENERATE_ARGS[3:]]
HOSTILE_ID = "h" * 1000
"""An id far past the 64-character limit, still well inside any URI limit HAProxy sets."""


@pytest.fixture(scope="module")
def cluster(shared_cluster: LaunchedCluster) -> LaunchedCluster:
    return shared_cluster


def worker_logs(cluster: LaunchedCluster) -> str:
    return "".join(path.read_text(errors="replace") for path in (cluster.run_dir / "logs").glob("*worker*.log"))


# --- 1. direct Gradio calls stay outside the product ---------------------------------------------


@pytest.mark.parametrize("path", ["run/generate", "api/generate", "run/generate/"])
def test_a_direct_call_of_a_queued_event_is_refused_and_runs_nothing(cluster: LaunchedCluster, path: str) -> None:
    seed = 7_000 + len(path)
    data = [*GENERATE_ARGS[:6], seed, *GENERATE_ARGS[7:]]
    answer = httpx.post(f"{cluster.public_url}/gradio_api/{path}", json={"data": data}, timeout=30)
    assert answer.status_code == 404 and answer.json()["error"] == "not_found", answer.text  # HAProxy's refusal
    # Behind it, the web front refuses on its own (what reaches it from inside the cluster, or another proxy).
    web = cluster.part_url("node1", "web")
    answer = httpx.post(f"{web}/gradio_api/{path}", json={"data": data}, headers=cluster.internal_headers, timeout=30)
    assert answer.status_code == 404, answer.text
    assert answer.json()["error"] == "queue_only" and "/gradio_api/call/generate" in answer.json()["detail"]
    assert f'"seed": {seed}' not in worker_logs(cluster)


def test_the_page_and_gradio_client_still_work(cluster: LaunchedCluster) -> None:
    url = cluster.public_url
    config = httpx.get(f"{url}/config", timeout=30).json()
    ids = {component["id"]: component.get("props", {}).get("elem_id") for component in config["components"]}
    size_named = next(dep for dep in config["dependencies"] if not dep.get("queue", True)
                      and [ids[i] for i in dep["inputs"]] == ["width", "height"]
                      and [ids[i] for i in dep["outputs"]] == ["resolution"])  # sliders moved: the size's name
    body = {"data": [768, 1024], "fn_index": size_named["id"], "session_hash": "edgepage1"}
    answer = httpx.post(f"{url}/gradio_api/run/predict", json=body, timeout=30)  # as the page sends it
    assert answer.status_code == 200, answer.text
    assert answer.json()["data"] == ["Portrait 768×1024"]
    client = GradioApiClient(url)
    try:
        assert client.generate(JOB).seed == JOB.seed  # queue/join + queue/data
    finally:
        client.close()
    assert f'"seed": {JOB.seed}' in worker_logs(cluster)  # the log does record seeds: the check above can fail


# --- 5. the curl-style API's streams count as listening ------------------------------------------


CALLS = {
    "call": {"data": SLOW_ARGS},
    "call-own-session": {"data": SLOW_ARGS, "session_hash": "curl-session-1"},
    "call/v2": dict(zip(["prompt", "negative_prompt", "steps", "guidance", "width", "height", "seed", "lora_scale",
                         "num_images"], SLOW_ARGS, strict=True)),
}


@pytest.mark.parametrize("call", list(CALLS))
def test_a_curl_style_call_outlives_the_listen_grace(cluster: LaunchedCluster, call: str) -> None:
    route = call.removesuffix("-own-session")
    body = {key: value for key, value in CALLS[call].items() if value is not None}
    # One client keeps HAProxy's node cookie (curl -c/-b), so both requests reach the same web front.
    with httpx.Client(base_url=f"{cluster.public_url}/gradio_api/{route}/generate", timeout=20) as client:
        posted = client.post("", json=body)
        assert posted.status_code == 200, posted.text
        started = time.monotonic()
        events = follow(client, f"/{posted.json()['event_id']}", give_up_after=SLOW_SECONDS + 30)
    assert events[-1] == "event: complete", events
    assert time.monotonic() - started >= SLOW_SECONDS - 0.5 > LISTEN_GRACE  # it ran to the end, past the grace


def follow(client: httpx.Client, path: str, give_up_after: float) -> list[str]:
    """The ``event:`` lines of a curl-style event stream, until its last event or ``give_up_after``
    seconds (a stream whose job was cancelled sends only heartbeats, for ever)."""
    deadline = time.monotonic() + give_up_after
    events = []
    with client.stream("GET", path) as stream:
        for line in stream.iter_lines():
            events += [line] if line.startswith("event:") else []
            if line in ("event: complete", "event: error") or time.monotonic() > deadline:
                break
    return events


# --- 4. client-chosen ids are held to a length and an alphabet ------------------------------------


@pytest.mark.parametrize(("method", "path", "body", "field"), [
    ("GET", f"queue/data?session_hash={HOSTILE_ID}", None, "session_hash"),
    ("GET", "queue/data?session_hash=..%2Fetc", None, "session_hash"),
    ("GET", f"upload_progress?upload_id={HOSTILE_ID}", None, "upload_id"),
    ("POST", f"upload?upload_id={HOSTILE_ID}", None, "upload_id"),
    ("GET", f"call/generate/{HOSTILE_ID}", None, "event_id"),
    ("GET", f"call/v2/generate/{HOSTILE_ID}", None, "event_id"),
    ("GET", f"heartbeat/{HOSTILE_ID}", None, "session_hash"),
    ("POST", "queue/join", {"data": GENERATE_ARGS, "fn_index": 0, "session_hash": HOSTILE_ID}, "session_hash"),
    ("POST", "call/generate", {"data": GENERATE_ARGS, "session_hash": HOSTILE_ID}, "session_hash"),
], ids=["queue-data", "queue-data-odd", "upload-progress", "upload", "call-stream", "call-v2-stream", "heartbeat",
        "join", "call"])
def test_an_oversized_or_odd_client_id_is_refused(cluster: LaunchedCluster, method: str, path: str,
                                                  body: dict | None, field: str) -> None:
    files = {"files": ("a.txt", b"x")} if path.startswith("upload?") else None
    answer = httpx.request(method, f"{cluster.public_url}/gradio_api/{path}", json=body, files=files, timeout=10)
    assert answer.status_code == 422, answer.text[:300]
    assert answer.json()["error"] == "invalid_id" and answer.json()["fields"] == [field]


def test_a_join_that_names_a_key_twice_is_refused(cluster: LaunchedCluster) -> None:
    """HAProxy reads the first ``fn_index`` to tell a job from a page event, Python's JSON the last: a body that
    names one twice could pass the edge's rate limit as a page event and run as a job, so it is refused."""
    body = f'{{"data": [], "session_hash": "twice", "fn_index": 6, "fn_index": {JOB_EVENT_INDICES[0]}}}'.encode()
    answer = httpx.post(f"{cluster.public_url}/gradio_api/queue/join", content=body,
                        headers={"Content-Type": "application/json"}, timeout=10)
    assert answer.status_code == 422, answer.text[:300]
    assert answer.json()["error"] == "invalid_json" and "fn_index" in answer.json()["detail"]


# --- 4. per-client structures stay bounded (the classes, and Gradio's routes in-process) ----------


def test_bounded_map_holds_its_count_bytes_and_age() -> None:
    clock = FakeClock()
    bounded: BoundedMap[float] = BoundedMap(max_items=100, max_bytes=20_000, ttl=60, clock=clock)
    for index in range(5_000):
        bounded[f"{index:064d}"] = 1.0
        assert len(bounded) <= 100 and bounded.nbytes <= 20_000
    assert f"{4_999:064d}" in bounded and f"{0:064d}" not in bounded  # the oldest went first
    bounded["x" * 100_000] = 1.0  # larger than the whole map may be: not kept
    assert "x" * 100_000 not in bounded and bounded.nbytes <= 20_000
    clock.now += 61
    assert len(bounded) == 0 and bounded.nbytes == 0


def test_event_streams_stay_bounded_by_count_and_bytes() -> None:
    streams = EventStreams(max_sessions=100, max_bytes=50_000, forget_after=600)
    for index in range(20_000):
        session = f"{index:064x}"
        assert streams.opened(session)
        streams.closed(session)
    assert len(streams) <= 100 and streams.nbytes <= 50_000
    held = [f"open-{index}" for index in range(100)]
    assert all(streams.opened(session) for session in held)
    assert not streams.opened("one-too-many")  # full of open streams: refused, not grown
    assert streams.silent_for(held[0], since=time.monotonic()) == 0.0
    streams.closed(held[0])
    assert streams.opened("one-too-many")


def test_each_join_awaits_one_data_stream_for_the_listen_grace_within_bounds() -> None:
    clock = FakeClock()
    awaited = AwaitedStreams(grace=10, max_sessions=100, max_bytes=50_000, clock=clock)
    awaited.answered("page")
    awaited.answered("page")
    assert [awaited.followed("page") for _ in range(3)] == [True, True, False]  # one stream a join, no more
    awaited.answered("page")
    clock.now += 10.5
    assert not awaited.followed("page")  # a stream past the grace had nothing of its own to wait for here
    for _ in range(MAX_JOINS + 10):
        awaited.answered("never-listens")
    assert sum(awaited.followed("never-listens") for _ in range(MAX_JOINS + 10)) == MAX_JOINS
    for index in range(20_000):
        awaited.answered(f"{index:064x}")
    assert len(awaited) <= 100 and awaited.nbytes <= 50_000


def test_gradio_upload_tracker_stays_bounded_under_a_flood_of_upload_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the real Gradio routes ``create_app`` mounts: uploads and progress streams with new ids."""
    from webui.web.app import create_app

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # create_app sets PIL's guard for all
    monkeypatch.setattr(gradio.routes, "file_upload_statuses", gradio.routes.file_upload_statuses)
    app = create_app(WebSettings(worker_queue="http://127.0.0.1:9", node="edge"))
    assert isinstance(gradio.routes.file_upload_statuses, BoundedUploadProgress)
    tracker = BoundedUploadProgress(max_uploads=40, max_bytes=40_000)
    install(tracker)

    async def flood() -> list[int]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://front") as client:
            uploads = [client.post(f"/gradio_api/upload?upload_id={uuid.uuid4().hex}", files={"files": ("a.txt", b"x")})
                       for _ in range(150)]
            waits = [client.get(f"/gradio_api/upload_progress?upload_id={uuid.uuid4().hex}") for _ in range(150)]
            answers = await asyncio.gather(*uploads, *waits)
        return [answer.status_code for answer in answers]

    statuses = asyncio.run(flood())
    assert statuses == [200] * 150 + [404] * 150  # uploads work; made-up progress ids are not found
    assert len(tracker) <= 40 and tracker.nbytes <= 40_000
    assert len(tracker) > 0  # Gradio's routes did use the installed tracker


def test_an_upload_still_reports_its_progress_to_the_end() -> None:
    tracker = BoundedUploadProgress(max_uploads=10, max_bytes=10_000)
    tracker.track("upload1")
    tracker.append("upload1", "photo.png", b"x" * 1000)
    assert tracker.pop("upload1").chunk_size == 1000
    tracker.set_done("upload1")
    assert tracker.is_done("upload1") and asyncio.run(tracker.is_tracked("upload1"))
    tracker.stop_tracking("upload1")
    assert len(tracker) == 0 and tracker.nbytes == 0

