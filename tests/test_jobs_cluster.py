"""The jobs service in the cluster: launch.py's sidecar runs ``python -m jobs`` after HAProxy, and HAProxy's public
port routes ``/v1/jobs`` to it through the same edge rules as ``/generate`` (rate, cross-site guard, body size).

One stand-in cluster (2 nodes, 0.04 s a denoising step: 0.32 s for 8 steps) for the module, its web fronts running
their generations as jobs (``jobs.web_fronts``: their ``--jobs-url`` is the worker queue, which passes ``/v1/jobs``
on). An API client's call outlives its web front (issue 21, item 1): its joins and event stream go through the jobs
service's stream relay (``jobs.relay``), which has another web front adopt a call whose own was SIGKILLed
(``webui.web.studio.adoption``), or joins it again whole there when it had no job yet (the web fronts hold a
``LATE_RECORD`` prompt's submission back: ``webui.web.faults``); the relay's own parts are tested in
``tests/test_stream_relay.py``. Every client here says who it is with its own ``X-Forwarded-For`` address (the
cluster's ``rate_limit_key``), so each test has its own rate counter. The jobs service's lease is 2 s
(``PORTRAIT_JOBS_LEASE_SECONDS`` in launch.py's environment reaches the service), so a job whose service was killed
is taken again soon. Run under the cluster lock:
``flock /tmp/ph-cluster.lock python -m pytest -q tests/test_jobs_cluster.py``.
"""

from __future__ import annotations

import hashlib
import os
import signal
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from gradio_client import Client
from prometheus_client.parser import text_string_to_metric_families

from balancer.haproxy.names import JOBS_BACKEND, JOBS_SERVER
from bench.harness.browser_client import BrowserProtocolClient
from bench.harness.generation import Job
from bench.harness.launched_cluster import LaunchedCluster
from bench.harness.waiting import wait_until
from tests.suite_cluster import suite_options
from webui.contract import (
    ADOPT_PATH,
    ADOPTED_EVENT_HEADER,
    FAULT_PROMPT_MARKER,
    FAULT_RECORD_DELAY_S,
    MAX_STEPS,
    PERSISTENCE_COOKIE,
    QUEUE_DATA_PATH,
)

JOB = {"prompt": "a studio portrait", "width": 64, "height": 64, "steps": 8}
RATE = 3
"""Generations a minute per client address."""
WAIT = 60.0
"""Bound (seconds) on anything a test waits for."""
LATE_RECORD = "[[late-record]]"
"""An API call whose prompt has this waits ``LATE_RECORD_S`` on its first web front before its job is recorded
(``webui.web.faults``): the test kills that front meanwhile."""
LATE_RECORD_S = 60
TOO_LARGE = "A job body may be at most 65536 bytes."
"""HAProxy's own answer to a job body over the jobs service's limit (the service words its own differently)."""


@pytest.fixture(scope="module")
def cluster() -> Iterator[LaunchedCluster]:
    options = suite_options(
        model="standin:0.04/step", nodes=2, start_timeout=120,
        sidecar={"probe_interval": 0.2, "backoff_initial": 0.2},
        extra={"limits": {"rate_limit_per_minute": RATE, "rate_limit_key": "x-forwarded-for"},
               "jobs": {"web_fronts": True}},
        env={"PORTRAIT_JOBS_LEASE_SECONDS": "2", FAULT_RECORD_DELAY_S: str(LATE_RECORD_S),
             FAULT_PROMPT_MARKER: LATE_RECORD},
    )
    with LaunchedCluster(options, name="jobs-cluster") as launched:
        launched.wait_jobs_ready()
        yield launched


def public(cluster: LaunchedCluster, address: str) -> httpx.Client:
    """A client of the public port that the balancer tells apart by ``address``."""
    return httpx.Client(base_url=cluster.public_url, headers={"X-Forwarded-For": address}, timeout=WAIT)


def job_now(http: httpx.Client, job_id: str) -> dict[str, Any] | None:
    """The job as the public port shows it; None while the jobs service does not answer (restarting)."""
    answer = http.get(f"/v1/jobs/{job_id}")
    return answer.json() if answer.status_code == 200 else None


def finished(http: httpx.Client, job_id: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        job = job_now(http, job_id)
        return job if job is not None and job["status"] in ("succeeded", "failed", "canceled") else None

    return wait_until(done, f"job {job_id} finished", WAIT, interval=0.1)


def event_names(http: httpx.Client, job_id: str) -> list[str]:
    """The names of a finished job's events, from its SSE stream through the public port."""
    with http.stream("GET", f"/v1/jobs/{job_id}/events") as answer:
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/event-stream")
        return [line.removeprefix("event:").strip() for line in answer.iter_lines() if line.startswith("event:")]


def test_a_job_through_the_public_port_succeeds_and_its_result_downloads(cluster: LaunchedCluster) -> None:
    with public(cluster, "10.1.0.1") as http:
        answer = http.post("/v1/jobs", json=JOB, headers={"Prefer": "wait=30"})
        assert answer.status_code == 201, answer.text
        job = answer.json()
        assert job["status"] == "succeeded" and len(job["output"]) == 1
        image = http.get(job["output"][0])
        assert image.status_code == 200 and image.headers["content-type"] == "image/png"
        etag = image.headers["etag"]
        assert etag == f'"{hashlib.sha256(image.content).hexdigest()}"'
        assert http.get(job["output"][0], headers={"If-None-Match": etag}).status_code == 304
        recipe = http.post("/v1/recipes", content=image.content, headers={"Content-Type": "image/png"})
        assert recipe.status_code == 200, recipe.text  # the balancer routes a PNG's recipe to the jobs service
        assert (recipe.json()["seed"], recipe.json()["prompt"]) == (job["input"]["seed"], JOB["prompt"])
        docs = http.get("/v1/jobs/docs")
        assert docs.status_code == 200 and "/v1/jobs/openapi.json" in docs.text


def test_the_jobs_service_runs_under_the_sidecar_behind_the_cluster_secret(cluster: LaunchedCluster) -> None:
    entry = cluster.status()["jobs"]
    assert entry["state"] == "ready" and isinstance(entry["pid"], int)
    assert (cluster.run_dir / "logs" / "jobs.log").is_file()
    around = httpx.get(f"{cluster.jobs_url}/v1/jobs", timeout=WAIT)  # a local user going around the edge
    assert around.status_code == 403 and around.json()["error"] == "not_a_cluster_part"
    assert httpx.get(f"{cluster.jobs_url}/v1/jobs", headers=cluster.internal_headers, timeout=WAIT).status_code == 200


def test_a_killed_jobs_service_is_restarted_and_its_jobs_succeed_once(cluster: LaunchedCluster) -> None:
    before = cluster.status()["jobs"]
    assert before["pid"] in {process.pid for process in cluster.process_tree()}  # ours to kill
    with public(cluster, "10.1.0.2") as http:
        ids = [http.post("/v1/jobs", json=JOB).json()["id"] for _ in range(RATE)]  # 2 workers: one waits
        running = wait_until(lambda: next((i for i in ids if (job_now(http, i) or {}).get("status") == "processing"),
                                          None), "a job running", WAIT, interval=0.01)
        os.kill(before["pid"], signal.SIGKILL)
        restarted = wait_until(lambda: (e := cluster.status()["jobs"])["restarts"] > before["restarts"]
                               and e["state"] == "ready" and e, "the jobs service restarted", WAIT, interval=0.1)
        assert restarted["pid"] != before["pid"]
        jobs = {job_id: finished(http, job_id) for job_id in ids}
        assert [job["status"] for job in jobs.values()] == ["succeeded"] * RATE
        assert jobs[running]["attempts"] >= 2  # its claim died with the service; the new one took it again
        for job_id in ids:
            names = event_names(http, job_id)
            assert names.count("result") == 1 and "failed" not in names, names


def test_a_job_submission_counts_against_the_generation_rate_and_reads_do_not(cluster: LaunchedCluster) -> None:
    with public(cluster, "10.1.0.3") as http:
        accepted = [http.post("/v1/jobs", json=JOB) for _ in range(RATE)]
        assert [answer.status_code for answer in accepted] == [202] * RATE
        for _ in range(RATE + 1):
            assert http.get(f"/v1/jobs/{accepted[0].json()['id']}").status_code == 200
        limited = http.post("/v1/jobs", json=JOB)
        assert limited.status_code == 429 and limited.json()["error"] == "rate_limited"
        assert limited.headers["retry-after"] == "60"


def test_the_edge_refuses_cross_site_and_oversized_jobs_and_says_when_the_service_is_down(
        cluster: LaunchedCluster) -> None:
    with public(cluster, "10.1.0.4") as http:
        listed = http.get("/v1/jobs")
        assert listed.status_code == 200
        for foreign in ({"Sec-Fetch-Site": "cross-site"}, {"Origin": "https://elsewhere.example"}):
            refused = http.post("/v1/jobs", json=JOB, headers=foreign)
            assert refused.status_code == 403 and refused.json()["error"] == "cross_site_request"
        oversized = http.post("/v1/jobs", content=b'{"prompt": "' + b"x" * 70_000 + b'"}',
                              headers={"Content-Type": "application/json"})
        assert oversized.status_code == 413 and oversized.json()["detail"] == TOO_LARGE
        ids = [[job["id"] for job in answer.json()["jobs"]] for answer in (listed, http.get("/v1/jobs"))]
        assert ids[0] == ids[1]  # no job was made
        cluster.runtime.set_server_state(JOBS_BACKEND, JOBS_SERVER, "maint")
        try:
            down = http.get("/v1/jobs")
        finally:
            cluster.runtime.set_server_state(JOBS_BACKEND, JOBS_SERVER, "ready")
        assert down.status_code == 503 and down.json()["error"] == "unavailable" and down.headers["retry-after"] == "5"


def test_with_web_fronts_on_jobs_a_gradio_client_generation_is_a_recorded_job(
        cluster: LaunchedCluster, tmp_path: Path) -> None:
    client = Client(cluster.public_url, verbose=False, download_files=str(tmp_path),
                    headers={"X-Forwarded-For": "10.1.0.5"})
    gallery, info = client.predict(prompt="a studio portrait", steps=4, width=64, height=64, seed=11,
                                   api_name="/generate")
    with public(cluster, "10.1.0.5") as http:
        job = finished(http, info["job_id"])  # recorded in the store, read through the public port
        assert job["status"] == "succeeded" and job["input"]["seed"] == 11 == info["seed"], job
        stored = http.get(info["result_url"])
    assert stored.status_code == 200
    assert hashlib.sha256(Path(gallery[0]["image"]).read_bytes()).hexdigest() == job["results"][0]["sha256"]
    assert hashlib.sha256(stored.content).hexdigest() == job["results"][0]["sha256"]


LONG_STEPS = 60
"""A killed call's job: 2.4 s, time to kill its web front mid-call."""


def jobs_with(http: httpx.Client, prompt: str) -> list[dict[str, Any]]:
    answer = http.get("/v1/jobs", params={"q": prompt})
    assert answer.status_code == 200, answer.text
    return answer.json()["jobs"]


def adoptions(cluster: LaunchedCluster) -> dict[str, float]:
    """The jobs service's count of relayed calls whose web front died, by outcome (since it last started)."""
    text = httpx.get(f"{cluster.jobs_url}/metrics", headers=cluster.internal_headers, timeout=WAIT).text
    return {sample.labels["outcome"]: sample.value for family in text_string_to_metric_families(text)
            if family.name == "portrait_jobs_relay_adoptions" for sample in family.samples
            if sample.name.endswith("_total")}


def test_a_gradio_client_call_whose_web_front_is_sigkilled_midway_gets_its_result_without_a_resend(
        cluster: LaunchedCluster, tmp_path: Path) -> None:
    cluster.wait_all_up(WAIT)  # the web front an earlier test killed is back
    prompt = f"relayed portrait {uuid.uuid4().hex[:8]}"
    client = Client(cluster.public_url, verbose=False, download_files=str(tmp_path),
                    headers={"X-Forwarded-For": "10.1.0.6"})
    front = client.cookies[PERSISTENCE_COOKIE]  # the web front HAProxy keeps this client on
    before = adoptions(cluster)
    with public(cluster, "10.1.0.6") as http:
        call = client.submit(prompt=prompt, steps=LONG_STEPS, width=64, height=64, seed=4242, api_name="/generate")
        job = wait_until(lambda: next((job for job in jobs_with(http, prompt) if job["progress"]), None),
                         "the call's job running", WAIT, interval=0.05)
        cluster.kill(front, "web")
        gallery, info = call.result(timeout=WAIT)
        assert info["job_id"] == job["id"] and info["seed"] == 4242, info
        assert info["web_node"] != front  # the web front that adopted the call
        assert Path(gallery[0]["image"]).read_bytes().startswith(b"\x89PNG")
        [made] = jobs_with(http, prompt)  # the same job, not a second one
        assert made["id"] == job["id"] and made["status"] == "succeeded"
    assert adoptions(cluster)["adopted"] == before["adopted"] + 1


def test_a_canceled_call_that_another_web_front_took_over_cancels_its_job(
        cluster: LaunchedCluster, tmp_path: Path) -> None:
    """gradio_client's cancel names the call's first event, which the adopting web front never had: the relay
    cancels the job itself."""
    cluster.wait_all_up(WAIT)  # the web front an earlier test killed is back
    prompt = f"canceled after a failover {uuid.uuid4().hex[:8]}"
    client = Client(cluster.public_url, verbose=False, download_files=str(tmp_path),
                    headers={"X-Forwarded-For": "10.1.0.10"})
    front = client.cookies[PERSISTENCE_COOKIE]
    before = adoptions(cluster)["adopted"]
    with public(cluster, "10.1.0.10") as http:
        call = client.submit(prompt=prompt, steps=MAX_STEPS, width=64, height=64, api_name="/generate")  # 4 s
        job = wait_until(lambda: next((job for job in jobs_with(http, prompt) if job["progress"]), None),
                         "the call's job running", WAIT, interval=0.05)
        cluster.kill(front, "web")
        wait_until(lambda: adoptions(cluster)["adopted"] > before, "the call taken over", WAIT, interval=0.05)
        call.cancel()
        assert finished(http, job["id"])["status"] == "canceled"
    client.close()


def test_a_call_whose_web_front_dies_before_its_stream_opens_gets_its_result(cluster: LaunchedCluster) -> None:
    """The gap between a join's answer and the stream's request: the relay knows the call from the join."""
    cluster.wait_all_up(WAIT)  # the web front an earlier test killed is back
    prompt = f"joined then orphaned {uuid.uuid4().hex[:8]}"
    client = BrowserProtocolClient(cluster.public_url, api_name="generate")  # gradio_client's protocol, by hand
    client.http.headers["X-Forwarded-For"] = "10.1.0.7"
    try:
        event_id = client.join(Job(prompt=prompt, steps=LONG_STEPS, width=64, height=64, seed=77))
        front = client.http.cookies[PERSISTENCE_COOKIE]
        with public(cluster, "10.1.0.7") as http:
            job = wait_until(lambda: next(iter(jobs_with(http, prompt)), None), "the call's job recorded", WAIT,
                             interval=0.05)
            cluster.kill(front, "web")
            data = client.outcome(event_id)  # from another web front, or the killed one's successor if it was quicker
            assert data["info"]["job_id"] == job["id"], data["info"]
            assert [made["id"] for made in jobs_with(http, prompt)] == [job["id"]]
    finally:
        client.close()


def test_a_call_whose_web_front_dies_before_it_records_its_job_is_joined_again_and_makes_one_job(
        cluster: LaunchedCluster) -> None:
    """No job to adopt: the relay joins the call again whole at another web front, which records it (once)."""
    cluster.wait_all_up(WAIT)
    prompt = f"{LATE_RECORD} joined, never recorded {uuid.uuid4().hex[:8]}"
    client = BrowserProtocolClient(cluster.public_url, api_name="generate")
    client.http.headers["X-Forwarded-For"] = "10.1.0.11"
    before = adoptions(cluster).get("adopted", 0)
    try:
        event_id = client.join(Job(prompt=prompt, steps=8, width=64, height=64, seed=81))
        front = client.http.cookies[PERSISTENCE_COOKIE]
        with public(cluster, "10.1.0.11") as http:
            assert jobs_with(http, prompt) == []  # its web front holds it for LATE_RECORD_S before recording
            cluster.kill(front, "web")
            data = client.outcome(event_id)
            made = jobs_with(http, prompt)
        assert [job["id"] for job in made] == [data["info"]["job_id"]], (made, data["info"])
        assert adoptions(cluster).get("adopted", 0) == before + 1
    finally:
        client.close()


def relayed_requests(cluster: LaunchedCluster) -> int:
    """Requests HAProxy sent the jobs service (its backend's count): the relay's among them."""
    return int(next(row["stot"] for row in cluster.runtime.show_stat()
                    if row["pxname"] == JOBS_BACKEND and row["svname"] == "BACKEND"))


def test_the_relay_answers_in_the_web_fronts_words_and_adopts_for_no_public_client(cluster: LaunchedCluster) -> None:
    cluster.wait_all_up(WAIT)  # the web front an earlier test killed is back
    front = httpx.Client(base_url=cluster.part_url("node1", "web"), headers=cluster.internal_headers, timeout=WAIT)
    with public(cluster, "10.1.0.8") as http, front:
        before = relayed_requests(cluster)
        for session in ("not a hash", uuid.uuid4().hex):  # one the relay refuses, one only a web front knows
            relayed = http.get(QUEUE_DATA_PATH, params={"session_hash": session})
            direct = front.get(QUEUE_DATA_PATH, params={"session_hash": session})
            assert (relayed.status_code, relayed.json()) == (direct.status_code, direct.json()), relayed.text
        assert relayed_requests(cluster) - before == 2
        adopt = http.post(ADOPT_PATH, params={"session_hash": "s1", "event_id": "e1"})
        assert adopt.status_code == 404, adopt.text
        forged = http.post("/gradio_api/queue/join", json={"fn_index": 0, "data": [], "session_hash": "s2"},
                           headers={ADOPTED_EVENT_HEADER: "e1"})  # only the relay may say a call is joined again
        assert forged.status_code != 500, forged.text


def test_a_page_whose_web_front_is_sigkilled_mid_job_gets_its_result_without_a_reload(
        cluster: LaunchedCluster) -> None:
    """The page's events (Generate records the job, the next follows it): the relay joins the follow again whole."""
    cluster.wait_all_up(WAIT)  # the web front an earlier test killed is back
    prompt = f"a page's portrait {uuid.uuid4().hex[:8]}"
    client = BrowserProtocolClient(cluster.public_url)  # the page's own events, as a browser tab sends them
    client.http.headers["X-Forwarded-For"] = "10.1.0.9"
    try:
        client.open()
        front = client.http.cookies[PERSISTENCE_COOKIE]
        with public(cluster, "10.1.0.9") as http, ThreadPoolExecutor(1) as pool:
            generation = pool.submit(client.generate, Job(prompt=prompt, steps=LONG_STEPS, width=256, height=256,
                                                          seed=99))  # the page's smallest size
            job = wait_until(lambda: next((job for job in jobs_with(http, prompt) if job["progress"]), None),
                             "the page's job running", WAIT, interval=0.05)
            cluster.kill(front, "web")
            reply = generation.result(timeout=WAIT)
            assert reply.web_node != front and reply.seed == 99, reply
            assert [made["id"] for made in jobs_with(http, prompt)] == [job["id"]]
    finally:
        client.close()
