"""A gradio_client call outlives its web front (issue 21, item 1): its event stream goes through the jobs service's
stream relay (``jobs.relay``), which hands the call to another web front when its own is SIGKILLed mid-call
(``webui.web.studio.adoption``). The client gets its result with no resend, and no second job is made.

One stand-in cluster (2 nodes, 0.25 s a denoising step) for the module; the pure parts (frames, call ids) first.
Run under the cluster lock: ``flock /tmp/ph-cluster.lock python -m pytest -q tests/test_stream_relay.py``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from gradio_client import Client
from prometheus_client.parser import text_string_to_metric_families

from balancer.haproxy.names import JOBS_BACKEND
from bench.harness.browser_client import BrowserProtocolClient
from bench.harness.cluster_options import ClusterOptions
from bench.harness.generation import Job
from bench.harness.launched_cluster import LaunchedCluster
from bench.harness.waiting import wait_until
from jobs.relay.calls import Calls
from jobs.relay.joins import MAX_CALLS, Joins
from jobs.relay.messages import Frames, FrameTooLarge, encoded, lost, parsed
from webui.contract import ADOPT_PATH, PERSISTENCE_COOKIE, QUEUE_DATA_PATH

WAIT = 60.0
"""Bound (seconds) on anything a test waits for."""
STEPS = 16
"""Denoising steps of the killed call's job: 4 s, time to kill its web front mid-call."""


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
        joins.joined("s1", f"e{n}")
    assert len(joins.of("s1")) == MAX_CALLS and joins.of("s1")[0] == "e5"  # the oldest went first
    for n in range(5, MAX_CALLS + 5):
        joins.ended("s1", f"e{n}")
    assert joins.of("s1") == () and joins.of("unknown") == ()


@pytest.fixture(scope="module")
def cluster() -> Iterator[LaunchedCluster]:
    options = ClusterOptions(model="standin:0.25/step", nodes=2, start_timeout=120,
                             sidecar={"probe_interval": 0.2, "backoff_initial": 0.2},
                             extra={"jobs": {"web_fronts": True}})
    with LaunchedCluster(options, name="stream-relay") as launched:
        launched.wait_jobs_ready()
        yield launched


def jobs_with(public: httpx.Client, prompt: str) -> list[dict]:
    answer = public.get("/v1/jobs", params={"q": prompt})
    assert answer.status_code == 200, answer.text
    return answer.json()["jobs"]


def test_a_call_whose_web_front_is_sigkilled_midway_gets_its_result_without_a_resend(
        cluster: LaunchedCluster, tmp_path: Path) -> None:
    prompt = f"relayed portrait {uuid.uuid4().hex[:8]}"
    client = Client(cluster.public_url, verbose=False, download_files=str(tmp_path))
    front = client.cookies[PERSISTENCE_COOKIE]  # the web front HAProxy keeps this client on
    with httpx.Client(base_url=cluster.public_url, timeout=WAIT) as public:
        call = client.submit(prompt=prompt, steps=STEPS, width=64, height=64, seed=4242, api_name="/generate")
        job = wait_until(lambda: next((job for job in jobs_with(public, prompt) if job["progress"]), None),
                         "the call's job running", WAIT, interval=0.1)
        cluster.kill(front, "web")
        gallery, info = call.result(timeout=WAIT)
        assert info["job_id"] == job["id"] and info["seed"] == 4242, info
        assert info["web_node"] != front  # the web front that adopted the call
        assert Path(gallery[0]["image"]).read_bytes().startswith(b"\x89PNG")
        [made] = jobs_with(public, prompt)  # the same job, not a second one
        assert made["id"] == job["id"] and made["status"] == "succeeded"
    assert adoptions(cluster) == {"adopted": 1.0, "lost": 0.0}


def adoptions(cluster: LaunchedCluster) -> dict[str, float]:
    """The jobs service's count of relayed calls whose web front died, by outcome."""
    text = httpx.get(f"{cluster.jobs_url}/metrics", headers=cluster.internal_headers, timeout=WAIT).text
    return {sample.labels["outcome"]: sample.value for family in text_string_to_metric_families(text)
            if family.name == "portrait_jobs_relay_adoptions" for sample in family.samples
            if sample.name.endswith("_total")}


def test_a_call_whose_web_front_dies_before_its_stream_opens_gets_its_result(cluster: LaunchedCluster) -> None:
    """The gap between a join's answer and the stream's request: the relay knows the call from the join."""
    prompt = f"joined then orphaned {uuid.uuid4().hex[:8]}"
    client = BrowserProtocolClient(cluster.public_url, api_name="generate")  # gradio_client's protocol, by hand
    try:
        event_id = client.join(Job(prompt=prompt, steps=STEPS, width=64, height=64, seed=77))
        front = client.http.cookies[PERSISTENCE_COOKIE]
        with httpx.Client(base_url=cluster.public_url, timeout=WAIT) as public:
            job = wait_until(lambda: next(iter(jobs_with(public, prompt)), None), "the call's job recorded", WAIT,
                             interval=0.05)
            cluster.kill(front, "web")
            data = client.outcome(event_id)
            assert data["info"]["job_id"] == job["id"] and data["info"]["web_node"] != front, data["info"]
            assert [made["id"] for made in jobs_with(public, prompt)] == [job["id"]]
    finally:
        client.close()


def relayed_streams(cluster: LaunchedCluster) -> int:
    """Requests HAProxy sent the jobs service's relay (its jobs backend's count, minus the jobs API's)."""
    return int(next(row["stot"] for row in cluster.runtime.show_stat()
                    if row["pxname"] == JOBS_BACKEND and row["svname"] == "BACKEND"))


def test_the_relay_serves_api_clients_streams_only_and_adopts_for_no_public_client(cluster: LaunchedCluster) -> None:
    with httpx.Client(base_url=cluster.public_url, timeout=WAIT) as public:
        before = relayed_streams(cluster)
        for session in ("not a hash", uuid.uuid4().hex):  # one the relay refuses, one only a web front knows
            api = public.get(QUEUE_DATA_PATH, params={"session_hash": session})
            page = public.get(QUEUE_DATA_PATH, params={"session_hash": session},  # straight to a web front
                              headers={"Sec-Fetch-Mode": "cors", "Sec-Fetch-Site": "same-origin"})
            assert (api.status_code, api.json()) == (page.status_code, page.json()), api.text  # the same words
        assert relayed_streams(cluster) - before == 2  # the API client's two, not the page's
        adopt = public.post(ADOPT_PATH, params={"session_hash": "s1", "event_id": "e1"})
        assert adopt.status_code == 404, adopt.text
