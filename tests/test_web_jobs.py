"""The studio through durable jobs (``python -m webui.web --jobs-url``): every generation of the page and of
``gradio_client`` is a job of the jobs service, and the page re-attaches to it.

Processes started by hand, as in ``tests/test_jobs_api.py``: one stand-in worker (``STANDIN`` a step,
whatever the CPU), ``python -m jobs`` (SQLite in a temp dir) and web fronts with ``--jobs-url``, all behind the
cluster secret (the clients add its header, as HAProxy does). The page runs in headless Chromium. Run under the
cluster lock: ``flock /tmp/ph-cluster.lock python -m pytest -q tests/test_web_jobs.py``.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from gradio_client import Client, handle_file
from PIL import Image
from playwright.sync_api import BrowserContext, expect, sync_playwright
from prometheus_client.parser import text_string_to_metric_families

from bench.harness.chromium import chromium_context
from bench.harness.processes import Processes
from bench.harness.waiting import wait_until
from tests.browser import StudioPage
from tests.jobs_service import PAGE_LISTEN_GRACE, SECRET, WAIT, Part, worker
from webui.contract import CLUSTER_SECRET_ENV, CLUSTER_SECRET_HEADER

pytestmark = pytest.mark.browser

STANDIN = "0.5/step"
"""The stand-in's time, per step: a job of 8 steps (4 s) is mid-job at step 2 for a reload, a kill or a cancel;
a job whose end is all a test needs takes 2 to 4 steps."""
HEADERS = {CLUSTER_SECRET_HEADER: SECRET[CLUSTER_SECRET_ENV]}
RELOADED_STEPS = 20
"""The reloaded job's steps (10 s): the reloaded page must still find it running, and a page load on a loaded
machine took longer than the 3 s left of an 8-step job."""
JOB_MS = 60_000
"""Longest a job may take to show in the page."""


@dataclass
class Site:
    worker: Part
    jobs: Part
    webs: dict[str, Part]

    def job(self, job_id: str) -> dict[str, Any]:
        return httpx.get(f"{self.jobs.url}/v1/jobs/{job_id}", headers=HEADERS, timeout=WAIT).json()

    def newest_job(self) -> dict[str, Any] | None:
        jobs = httpx.get(f"{self.jobs.url}/v1/jobs?limit=1", headers=HEADERS, timeout=WAIT).json()["jobs"]
        return jobs[0] if jobs else None

    def running_job(self) -> dict[str, Any]:
        """The newest job once a worker has run two of its steps."""
        def running() -> dict[str, Any] | None:
            job = self.newest_job()
            return job if job and job["status"] == "processing" and (job["progress"] or {}).get("step", 0) >= 2 \
                else None
        return wait_until(running, "a job at its second step", timeout=WAIT, interval=0.1)

    def finished(self, job_id: str) -> dict[str, Any]:
        return wait_until(lambda: job if (job := self.job(job_id))["status"] in ("succeeded", "failed", "canceled")
                          else None, f"job {job_id} finished", timeout=WAIT, interval=0.1)

    def generations(self) -> float:
        """Jobs the worker was asked to run (``/generate/stream``, any outcome) since it started."""
        text = httpx.get(f"{self.worker.url}/metrics", headers=HEADERS, timeout=10).text
        return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
                   if sample.name == "portrait_worker_requests_total"
                   and sample.labels.get("endpoint") == "/generate/stream")


def web(processes: Processes, name: str, site_jobs: Part, site_worker: Part, port: int | None = None) -> Part:
    args = ["python", "-m", "webui.web", "--node", name, "--worker-queue", site_worker.url, "--jobs-url",
            site_jobs.url, "--listen-grace", f"{PAGE_LISTEN_GRACE:g}"]
    return Part(processes, args, name) if port is None else Part(processes, args, name, port=port)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    store = tmp_path_factory.mktemp("web-jobs") / "jobs.sqlite3"
    with Processes("web-jobs") as processes:
        standin = worker(processes, "jobs-worker", STANDIN).start()
        jobs = Part(processes, ["python", "-m", "jobs", "--store-url", f"sqlite:///{store}", "--worker-queue-url",
                                standin.url, "--lease-seconds", "2", "--run-dir", str(store.parent)],
                    "web-jobs-service").start()
        webs = {name: web(processes, name, jobs, standin).start() for name in ("web-a", "web-b")}
        standin.ready("/readyz")
        jobs.ready("/healthz")
        for part in webs.values():
            part.ready("/readyz")
        yield Site(standin, jobs, webs)


@pytest.fixture(scope="module")
def browser() -> Iterator[BrowserContext]:
    with sync_playwright() as playwright, chromium_context(playwright) as context:
        context.set_default_timeout(30_000)
        context.set_extra_http_headers(HEADERS)  # what HAProxy adds in a cluster
        yield context


def studio_page(browser: BrowserContext, part: Part, name: str) -> StudioPage:
    return StudioPage(browser.new_page(), part.url + "/", name).open()


def start_job(studio: StudioPage, prompt: str, steps: int = 8) -> None:
    studio.type_prompt(prompt)
    studio.choose("resolution", "Quick 512×512")
    studio.set_slider("steps", steps)
    studio.start()


def shown_result(studio: StudioPage) -> tuple[str, str]:
    """(job id, web node) of the result the page shows (from its details view), once it shows one and no progress
    any more."""
    summary = studio.component("info-summary")
    expect(summary).to_contain_text("Seed", timeout=JOB_MS)
    studio.wait_idle(JOB_MS)
    seed = re.search(r"Seed\s+(\d+)", summary.inner_text())
    assert seed, summary.inner_text()
    text = studio.details_text(int(seed[1]))
    job, node = re.search(r"Job:\s*(j_\S+)", text), re.search(r"Web front:\s*(\S+)", text)
    assert job and node, text
    return job[1], node[1]


def gradio_client(part: Part, tmp_path: Path) -> Client:
    return Client(part.url + "/", headers=HEADERS, verbose=False, download_files=str(tmp_path))


def test_a_gradio_client_generation_is_a_recorded_job(site: Site, tmp_path: Path) -> None:
    before = site.generations()
    gallery, info = gradio_client(site.webs["web-a"], tmp_path).predict(
        prompt="a studio portrait", steps=4, width=64, height=64, seed=7, api_name="/generate")
    job = site.job(info["job_id"])
    assert job["status"] == "succeeded" and job["input"]["seed"] == 7 == info["seed"], job
    assert info["result_url"] == f"/v1/jobs/{job['id']}/results/0" == job["output"][0]
    assert hashlib.sha256(Path(gallery[0]["image"]).read_bytes()).hexdigest() == job["results"][0]["sha256"]
    assert site.generations() - before == 1


WORKER_PATH_INFO = {"seed", "width", "height", "steps", "guidance", "lora_scale", "num_images", "mode", "strength",
                    "prompt", "negative_prompt", "model", "worker_id", "web_node", "attempts", "timings"}
"""The keys of a gradio_client result's ``info`` when the web front runs the job on the workers itself."""


def test_a_gradio_client_job_s_info_is_the_worker_path_s_info(site: Site, tmp_path: Path) -> None:
    """The job keeps the worker's account of its result (``generation``), and the web front's ``info`` gives it
    back as the worker path does: which worker, which model, the effective parameters, the worker's timings."""
    served = httpx.get(f"{site.worker.url}/info", headers=HEADERS, timeout=WAIT).json()
    _, info = gradio_client(site.webs["web-b"], tmp_path).predict(
        prompt="a portrait for the record", steps=3, width=64, height=64, seed=21, api_name="/generate")
    assert WORKER_PATH_INFO <= set(info), sorted(WORKER_PATH_INFO - set(info))
    assert (info["worker_id"], info["model"], info["web_node"]) == (served["node"], served["model"], "web-b")
    assert (info["seed"], info["steps"], info["width"], info["mode"], info["attempts"]) == (21, 3, 64, "text2img", 1)
    assert {"queue_ms", "generate_ms", "total_ms", "web_ms"} <= set(info["timings"])
    generation = site.job(info["job_id"])["generation"]
    assert generation["worker_id"] == served["node"] and generation["params"]["steps"] == 3, generation


def test_a_reload_after_the_result_opens_a_fresh_page(site: Site, browser: BrowserContext) -> None:
    """A job whose result the page has shown is forgotten: a reload shows neither it nor its form again (a fresh
    page, as without jobs), so the next job is the one typed now."""
    studio = studio_page(browser, site.webs["web-a"], "jobs-forgotten")
    start_job(studio, "a portrait shown once", steps=2)
    job_id, _ = shown_result(studio)
    studio.open()
    studio.page.wait_for_timeout(1500)  # the page's restore and follow run right after its load
    studio.wait_idle(JOB_MS)
    expect(studio.component("prompt").locator("textarea")).to_have_value("")
    assert studio.gallery_count() == 0 and "Seed" not in studio.summary_text()
    assert site.finished(job_id)["status"] == "succeeded"


def test_a_reload_mid_job_shows_the_same_jobs_progress_then_its_result(site: Site, browser: BrowserContext) -> None:
    studio = studio_page(browser, site.webs["web-a"], "jobs-reload")
    before = site.generations()
    start_job(studio, "a portrait that outlives a reload", steps=RELOADED_STEPS)
    studio.wait_for_step(2, JOB_MS)
    running = site.running_job()
    studio.screenshot("1-before-reload")

    studio.open()  # the reload: Gradio drops the page's event; the job runs on
    expect(studio.component("prompt").locator("textarea")).to_have_value("a portrait that outlives a reload")
    studio.wait_for_step(3, JOB_MS)
    job_id, _ = shown_result(studio)
    studio.screenshot("2-result-after-reload")

    assert job_id == running["id"]
    assert site.job(job_id)["status"] == "succeeded"
    assert {total for _, total in studio.step_fractions()} == {RELOADED_STEPS}
    assert site.newest_job()["id"] == job_id, "the reload submitted a second job"
    assert site.generations() - before == 1
    assert studio.gallery_image_sizes() == [(512, 512)]
    studio.page.close()


def test_the_page_on_another_web_front_after_a_kill_shows_the_result(site: Site, browser: BrowserContext) -> None:
    first = site.webs["web-b"]
    studio = studio_page(browser, first, "jobs-front-killed")
    before = site.generations()
    start_job(studio, "a portrait whose web front dies")
    studio.wait_for_step(2, JOB_MS)
    running = site.running_job()
    first.kill()
    # Another web front process, at the same address (the balancer's one origin in a cluster).
    other = web(first.processes, "web-c", site.jobs, site.worker, port=first.port).start().ready("/readyz")
    studio.open()
    job_id, node = shown_result(studio)

    assert (job_id, node) == (running["id"], "web-c")
    assert site.job(job_id)["status"] == "succeeded"
    assert site.generations() - before == 1
    assert studio.gallery_image_sizes() == [(512, 512)]
    studio.page.close()
    other.kill()


def test_the_cancel_button_cancels_the_job(site: Site, browser: BrowserContext) -> None:
    studio = studio_page(browser, site.webs["web-a"], "jobs-cancel")
    start_job(studio, "a portrait to cancel")
    studio.wait_for_step(2, JOB_MS)
    running = site.running_job()
    studio.component("cancel").click()
    expect(studio.component("error")).to_contain_text("Canceled", timeout=JOB_MS)
    assert site.finished(running["id"])["status"] == "canceled"
    studio.page.close()


def test_the_share_button_shows_a_link_that_opens_the_result(site: Site, browser: BrowserContext) -> None:
    studio = studio_page(browser, site.webs["web-a"], "jobs-share")
    expect(studio.component("share")).to_be_hidden()  # nothing to share before a result
    start_job(studio, "a portrait to share", steps=2)
    job_id, _ = shown_result(studio)
    expect(studio.component("share")).to_be_visible()
    studio.component("share").click()
    links = studio.component("share-links")
    expect(links).to_contain_text("Share links", timeout=JOB_MS)
    hrefs = links.locator("a").evaluate_all("anchors => anchors.map(a => a.getAttribute('href'))")
    assert len(hrefs) == 1 and hrefs[0].startswith("/v1/share/"), hrefs
    # The balancer sends /v1/share/ to the jobs service with no login (tests/test_share_links.py); here, straight.
    image = httpx.get(site.jobs.url + hrefs[0], headers=HEADERS, timeout=WAIT)
    assert image.status_code == 200, image.text[:200]
    assert hashlib.sha256(image.content).hexdigest() == site.job(job_id)["results"][0]["sha256"]
    studio.start()  # the next generation hides the last result's links
    expect(links).to_be_hidden(timeout=JOB_MS)
    following = wait_until(lambda: (job := site.newest_job()) and job["id"] != job_id and job, "the next job",
                           timeout=WAIT, interval=0.1)
    httpx.post(f"{site.jobs.url}/v1/jobs/{following['id']}/cancel", headers=HEADERS, timeout=WAIT)
    site.finished(following["id"])  # no job of this test left running for the next one
    studio.page.close()


def test_a_cancelled_gradio_client_call_cancels_its_job(site: Site, tmp_path: Path) -> None:
    client = gradio_client(site.webs["web-a"], tmp_path)
    call = client.submit(prompt="a portrait nobody waits for", steps=8, width=64, height=64, api_name="/generate")
    running = site.running_job()
    call.cancel()
    client.close()
    assert site.finished(running["id"])["status"] == "canceled"


def test_a_retouch_photo_larger_than_a_text_job_goes_through_the_jobs_service(site: Site, tmp_path: Path) -> None:
    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (480, 400, 3), dtype=np.uint8)).save(photo)
    gallery, info = gradio_client(site.webs["web-a"], tmp_path).predict(
        image=handle_file(str(photo)), prompt="softer light", strength=0.5, steps=4, api_name="/retouch")
    job = site.job(info["job_id"])
    assert job["status"] == "succeeded" and info["mode"] == "retouch", job
    assert (info["width"], info["height"]) == (400, 480), info  # the photo's own size, as on the page
    photo_sent = httpx.get(site.jobs.url + job["input"]["init_image"], headers=HEADERS, timeout=WAIT)
    assert photo_sent.status_code == 200, photo_sent.text  # the job's JSON names the photo by URL
    assert len(base64.b64encode(photo_sent.content)) > 64 * 1024, "the photo was not larger than a text job's limit"
    # Without a photo, a body above the service's --max-body-bytes (64 KiB) is still refused.
    padded = {"prompt": "a portrait", "padding": "x" * (64 * 1024)}
    refused = httpx.post(f"{site.jobs.url}/v1/jobs", json=padded, headers=HEADERS, timeout=WAIT)
    assert refused.status_code == 413 and "retouch" in refused.json()["detail"], refused.text


def test_a_followed_job_survives_a_restart_of_the_jobs_service(site: Site, tmp_path: Path) -> None:
    call = gradio_client(site.webs["web-a"], tmp_path).submit(
        prompt="a portrait across a jobs service restart", steps=8, width=64, height=64, api_name="/generate")
    running = site.running_job()
    site.jobs.kill()  # the web front's event stream is cut mid-job
    site.jobs.start().ready("/healthz")
    _, info = call.result(timeout=WAIT)

    assert info["job_id"] == running["id"] and info["attempts"] == 2, info
    assert site.job(running["id"])["status"] == "succeeded"
    assert site.newest_job()["id"] == running["id"], "the web front submitted the job again"
