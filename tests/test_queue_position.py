"""A waiting job's place (jobs ahead, about how long) for every client, and Cancel while queued and running.

One stand-in worker (``STANDIN_SECONDS`` a job, whatever the CPU), ``python -m jobs`` (SQLite, one dispatch slot)
and one web front with ``--jobs-url``, behind the cluster secret (the clients add its header, as HAProxy does).
The API's events and the page (headless Chromium) and ``gradio_client``'s progress say the place; the worker's
``/metrics`` (``portrait_worker_busy``) says when its GPU is free. Where the test needs the worker not to take a
job yet, it pauses the worker process (SIGSTOP: a worker busy with something else) and resumes it (SIGCONT).
Run under the cluster lock: ``flock /tmp/ph-cluster.lock python -m pytest -q tests/test_queue_position.py``.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from gradio_client import Client
from playwright.sync_api import BrowserContext, expect, sync_playwright
from prometheus_client.parser import text_string_to_metric_families

from bench.harness.chromium import chromium_context
from bench.harness.processes import Processes
from bench.harness.waiting import wait_until
from tests.browser import StudioPage
from tests.jobs_service import JOB, PAGE_LISTEN_GRACE, PART, WAIT, Part, service, sse, worker

pytestmark = pytest.mark.browser

STANDIN_SECONDS = 6.0
"""A job's length on the stand-in (8 steps of 0.75 s): the page's steps fit in one job."""
FREED_S = 2.0
"""How soon a canceled running job must leave its worker idle."""
UI_MS = 30_000


@dataclass
class Site:
    worker: Part
    jobs: Part
    web: Part

    def job(self, job_id: str) -> dict[str, Any]:
        return httpx.get(f"{self.jobs.url}/v1/jobs/{job_id}", headers=PART, timeout=WAIT).json()

    def submit(self) -> str:
        return httpx.post(f"{self.jobs.url}/v1/jobs", json=JOB, headers=PART, timeout=WAIT).json()["id"]

    def cancel(self, job_id: str) -> None:
        httpx.post(f"{self.jobs.url}/v1/jobs/{job_id}/cancel", headers=PART, timeout=WAIT).raise_for_status()

    def newest(self, count: int) -> list[dict[str, Any]]:
        return httpx.get(f"{self.jobs.url}/v1/jobs?limit={count}", headers=PART, timeout=WAIT).json()["jobs"]

    def until(self, job_id: str, done: Any, what: str) -> dict[str, Any]:
        return wait_until(lambda: job if done(job := self.job(job_id)) else None, what, timeout=WAIT, interval=0.1)

    def worker_busy(self) -> bool:
        text = httpx.get(f"{self.worker.url}/metrics", headers=PART, timeout=10).text
        return any(sample.value == 1 for family in text_string_to_metric_families(text) for sample in family.samples
                   if sample.name == "portrait_worker_busy")

    def pause_worker(self) -> None:
        os.kill(self.worker.proc.pid, signal.SIGSTOP)

    def resume_worker(self) -> None:
        os.kill(self.worker.proc.pid, signal.SIGCONT)


def running(job: dict[str, Any]) -> bool:
    return job["status"] == "processing" and job["progress"] is not None


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    store = tmp_path_factory.mktemp("queue-position") / "jobs.sqlite3"
    with Processes("queue-position") as processes:
        standin = worker(processes, "queue-worker", STANDIN_SECONDS).start()
        jobs = service(processes, "queue-jobs", standin.url, f"sqlite:///{store}").start()
        web = Part(processes, ["python", "-m", "webui.web", "--node", "queue-web", "--worker-queue", standin.url,
                               "--jobs-url", jobs.url, "--listen-grace", f"{PAGE_LISTEN_GRACE:g}"], "queue-web").start()
        standin.ready("/readyz")
        jobs.ready("/healthz")
        web.ready("/readyz")
        site = Site(standin, jobs, web)
        yield site
        site.resume_worker()  # never leave a paused process behind


def test_the_third_job_hears_two_then_one_ahead_then_runs(site: Site) -> None:
    """Three jobs on one worker: the third's events say 2 ahead (the first claimed, not yet on the worker, counts),
    then 1 ahead once the first runs, then 0, then it starts; with the wait once a job has finished."""
    seen: list[tuple[str, Any, Any]] = []
    second_canceled = False
    site.pause_worker()
    try:
        first, second, third = (site.submit() for _ in range(3))
        site.until(first, lambda job: job["status"] == "processing", "the first job claimed")
        with httpx.stream("GET", f"{site.jobs.url}/v1/jobs/{third}/events", headers=PART, timeout=WAIT) as answer:
            for event in sse(answer):
                data = event["data"]
                seen.append((event["event"], data.get("queue_position"), data.get("wait_s")))
                site.resume_worker()  # once the third heard its first place
                if event["event"] == "queued" and data["queue_position"] == 0 and not second_canceled:
                    site.cancel(second)  # the second runs now: its cancel frees the worker for the third
                    second_canceled = True
                if event["event"] == "progress":
                    site.cancel(third)
                if event["event"] in ("result", "failed", "canceled"):
                    break
    finally:
        site.resume_worker()
    places = [position for name, position, _ in seen if name == "queued"]
    assert [p for i, p in enumerate(places) if i == 0 or p != places[i - 1]] == [2, 1, 0], seen
    names = [name for name, _, _ in seen]
    assert names.index("started") > max(i for i, name in enumerate(names) if name == "queued"), seen
    assert "progress" in names and names[-1] == "canceled", seen
    waits = [wait for name, position, wait in seen if name == "queued" and position == 0]
    assert any(isinstance(wait, int) for wait in waits), seen  # known once the first job succeeded
    assert site.job(first)["status"] == "succeeded" and site.job(second)["status"] == "canceled"


@pytest.fixture
def one_job_done(site: Site) -> None:
    """A job that succeeded (the first test's, when it ran): the wait is known from then on."""
    if not any(job["status"] == "succeeded" for job in site.newest(20)):
        site.until(site.submit(), lambda job: job["status"] == "succeeded", "a first job succeeded")


def gradio_desc(call: Any) -> str:
    progress = call.status().progress_data or []
    return " ".join(unit.desc or "" for unit in progress)


@pytest.fixture(scope="module")
def browser() -> Iterator[BrowserContext]:
    with sync_playwright() as playwright, chromium_context(playwright) as context:
        context.set_default_timeout(UI_MS)
        context.set_extra_http_headers(PART)  # what HAProxy adds in a cluster
        yield context


def start(studio: StudioPage, prompt: str) -> None:
    studio.type_prompt(prompt)
    studio.choose("resolution", "Quick 512×512")
    studio.set_slider("steps", 8)
    studio.start()


def test_the_page_and_gradio_client_say_the_place_and_cancel_queued_and_running_jobs(
        site: Site, browser: BrowserContext, tmp_path: Path, one_job_done: None) -> None:
    """While tab A's job runs (its worker paused meanwhile, so that the browser's pace does not matter), a
    gradio_client job waits next and tab B's job behind it: B says "1 job ahead of yours, about N s",
    gradio_client "Yours is next". B's Cancel ends B before it ever ran; gradio_client's cancel ends its job;
    A's Cancel (the worker resumed) leaves the worker idle within FREED_S."""
    tab_a = StudioPage(browser.new_page(), site.web.url + "/", "queue-a").open()
    tab_b = StudioPage(browser.new_page(), site.web.url + "/", "queue-b").open()
    client = Client(site.web.url + "/", headers=PART, verbose=False, download_files=str(tmp_path))
    start(tab_a, "a portrait that runs first")
    a = wait_until(lambda: (jobs := site.newest(1)) and running(jobs[0]) and jobs[0], "tab A's job running",
                   timeout=WAIT, interval=0.1)
    site.pause_worker()  # A's generation lasts until the resume, however slow the browser steps below are
    call = client.submit(prompt="a portrait that waits next", steps=8, width=64, height=64, api_name="/generate")
    wait_until(lambda: "Yours is next" in gradio_desc(call), "gradio_client told it is next", timeout=WAIT,
               interval=0.1)
    start(tab_b, "a portrait that waits behind two")
    expect(tab_b.component("progress")).to_contain_text("1 job ahead of yours, about", timeout=UI_MS)
    tab_b.screenshot("1-one-job-ahead")
    b, x = site.newest(2)
    assert b["id"] != a["id"] and x["id"] != a["id"] and b["queue_position"] == 1, (a, x, b)

    tab_b.component("cancel").click()
    expect(tab_b.component("error")).to_contain_text("Canceled", timeout=UI_MS)
    canceled = site.until(b["id"], lambda job: job["status"] == "canceled", "tab B's job canceled")
    assert canceled["attempts"] == 0 and canceled["started_at"] is None, canceled  # it never ran

    call.cancel()
    canceled = site.until(x["id"], lambda job: job["status"] == "canceled", "gradio_client's job canceled")
    assert canceled["attempts"] == 0 and canceled["started_at"] is None, canceled

    site.resume_worker()
    assert running(site.job(a["id"])) and site.worker_busy()
    tab_a.component("cancel").click()
    clicked = time.monotonic()
    wait_until(lambda: not site.worker_busy(), "the worker idle", timeout=WAIT, interval=0.05)
    freed_s = time.monotonic() - clicked
    print(f"worker idle {freed_s:.2f} s after the running job's Cancel")
    assert site.until(a["id"], lambda job: job["status"] != "processing", "A ended")["status"] == "canceled"
    assert freed_s <= FREED_S, freed_s
    expect(tab_a.component("error")).to_contain_text("Canceled", timeout=UI_MS)
    client.close()
    for tab in (tab_a, tab_b):
        tab.page.close()
