"""The worker HTTP server (``python -m webui.worker``): real processes on loopback, demo model.

One worker serves most tests (started once for the module); the fault-injection workers
(out of memory, sudden death) and a worker with a missing model are started together, so
that their start-ups overlap. The scheduler, fault plan, upload checks, error messages and
GPU-only branches are also tested in-process, mocking only the CUDA calls themselves.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import torch
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError
from starlette.testclient import TestClient

from bench.harness.processes import Processes, free_port
from bench.harness.waiting import wait_http
from webui.contract import (
    EXIT_LOAD_FAILED,
    EXIT_OOM,
    FAULT_OOM_AT_STEP,
    FAULT_PROMPT_MARKER,
    FAULT_STALL_AT_STEP,
    FAULT_STEP_CPU_SECONDS,
    MINIMAL_RESULT,
    RECORD_JOB_HEADER,
    STALLED_KEY,
)
from webui.images import UploadError, decode_upload
from webui.schema import ErrorBody, GenerationResult, Limits, ModelFamily
from webui.settings import WorkerSettings
from webui.web.worker_client import WorkerClient
from webui.worker.app import create_app
from webui.worker.errors import JobCancelled, QueueFull
from webui.worker.faults import FaultPlan
from webui.worker.generation import GenerationService, cuda_index, is_out_of_memory
from webui.worker.http_errors import http_error
from webui.worker.job_parsing import ApiError, invalid_request, validate_job, validation_problems
from webui.worker.metrics import WorkerMetrics
from webui.worker.pipelines.warmup import PROBE_PROMPT
from webui.worker.scheduler import Job, JobScheduler

SMALL = {"width": 128, "height": 128, "steps": 2}
WAIT = 120.0
"""Bound (seconds) for anything a test waits for: worker start-up, a job, an exit."""


@dataclass
class RunningWorker:
    """A worker process a test module started."""

    url: str
    proc: subprocess.Popen
    first_readyz: httpx.Response | None
    """``/readyz`` as soon as ``/healthz`` answered (before the model was warm)."""

    def log(self) -> str:
        return Path(self.proc.log_path).read_text(errors="replace")


STANDIN = "standin:0.4"
"""The fixed-latency stand-in (0.4 s a job) for workers whose subject is not the model."""


def start_worker(
    processes: Processes, name: str, *args: str, env: dict[str, str] | None = None, check_health: bool = True
) -> RunningWorker:
    """Start ``python -m webui.worker`` on a free port; return once ``/healthz`` answers (if asked)."""
    port = free_port()
    proc = processes.start(
        ["python", "-m", "webui.worker", "--port", str(port), "--node", name, "--warmup-steps", "1", *args],
        env=env, log_name=name,
    )
    url = f"http://127.0.0.1:{port}"
    if not check_health:
        return RunningWorker(url, proc, None)
    wait_http(f"{url}/healthz", proc=proc, timeout=WAIT)
    return RunningWorker(url, proc, httpx.get(f"{url}/readyz", timeout=10))


def wait_ready(worker: RunningWorker) -> RunningWorker:
    """Block until the worker's ``/readyz`` says 200."""
    wait_http(f"{worker.url}/readyz", proc=worker.proc, timeout=WAIT)
    return worker


def png_size(b64: str) -> tuple[int, int]:
    image = Image.open(io.BytesIO(base64.b64decode(b64)))
    assert image.format == "PNG"
    return image.size


def png_b64(image: Image.Image, fmt: str = "PNG") -> str:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return base64.b64encode(buffer.getvalue()).decode()


def metric_values(url: str) -> dict[tuple[str, tuple], float]:
    """Every sample of ``/metrics`` as {(name, sorted labels): value}."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def requests_total(values: dict, endpoint: str, outcome: str) -> float:
    return values.get(("portrait_worker_requests_total", (("endpoint", endpoint), ("outcome", outcome))), 0.0)


def poll_readyz(url: str, until, what: str) -> dict:
    """Poll ``/readyz`` (bounded) until ``until(body)`` holds."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        body = httpx.get(f"{url}/readyz", timeout=10).json()
        if until(body):
            return body
        time.sleep(0.05)
    raise AssertionError(f"/readyz never showed {what} (last: {body})")


def stream_events(response: httpx.Response):
    for line in response.iter_lines():
        if line.strip():
            yield json.loads(line)


@pytest.fixture(scope="module")
def worker(demo_model_dir) -> RunningWorker:
    """The module's worker: queue of 1 so that the queue-full test needs only three requests."""
    with Processes("worker") as processes:
        yield wait_ready(start_worker(processes, "test-worker", "--queue-size", "1"))


@pytest.fixture(scope="module")
def side_workers(demo_model_dir, tmp_path_factory) -> dict[str, RunningWorker]:
    """Workers with injected faults and one with a missing model, started together. The dying and the stalling
    ones serve the fixed-latency stand-in (not a model; a fault is an ``on_step`` wrapper, the same for any
    pipeline, and it starts in a second); the out-of-memory one the demo model, whose clean-up it exercises."""
    missing = tmp_path_factory.mktemp("no-model") / "missing"
    with Processes("side") as processes:
        workers = {
            "oom": start_worker(
                processes, "oom-worker", "--max-consecutive-ooms", "2",
                env={FAULT_OOM_AT_STEP: "2", "PORTRAIT_FAULT_PROMPT_MARKER": "OOM-ME"},
            ),
            "die": start_worker(processes, "die-worker", "--model", STANDIN,
                                env={"PORTRAIT_FAULT_DIE_AT_STEP": "2"}),
            "stall": start_worker(processes, "stall-worker", "--model", STANDIN, "--stall-floor", "1",
                                  env={FAULT_STALL_AT_STEP: "2", "PORTRAIT_FAULT_PROMPT_MARKER": "STALL-ME"}),
            "missing": start_worker(processes, "missing-model", "--model", str(missing), check_health=False),
        }
        yield workers


def generate(worker: RunningWorker, **fields) -> httpx.Response:
    return httpx.post(f"{worker.url}/generate", json={"prompt": "a portrait", **fields}, timeout=WAIT)


# --------------------------------------------------------------------------- one worker, end to end


def test_readyz_is_503_until_warm_then_200_with_pipeline(worker):
    first = worker.first_readyz
    assert first.status_code == 503
    assert first.json()["ready"] is False
    assert first.json()["reason"] in ("starting", "loading the model", "warming up")
    ready = httpx.get(f"{worker.url}/readyz", timeout=10)
    assert ready.status_code == 200
    body = ready.json()
    assert body["ready"] is True and body["node"] == "test-worker"
    assert body["busy"] is False and body["queue_depth"] == 0
    assert body["pipeline"]["attention"] == "sdpa" and body["pipeline"]["device"] == "cpu"
    assert httpx.get(f"{worker.url}/healthz", timeout=10).json()["alive"] is True


def test_info_shows_how_the_model_runs_and_why(worker):
    """dtype, compile, FP8 and attention, each with a one-line reason (webui.worker.pipelines.configuration)."""
    configuration = httpx.get(f"{worker.url}/info", timeout=10).json()["configuration"]
    assert {name: choice["value"] for name, choice in configuration.items()} == {
        "dtype": "float32", "compile": False, "fp8": False, "attention": "sdpa"}
    assert configuration["dtype"]["reason"].startswith("CPU")
    assert all(choice["reason"] and "\n" not in choice["reason"] for choice in configuration.values())


@pytest.mark.parametrize("width,height", [(128, 128), (192, 128)])
def test_generate_returns_pngs_of_the_requested_size(worker, width, height):
    response = generate(worker, width=width, height=height, steps=2, num_images=2, seed=11)
    assert response.status_code == 200, response.text
    result = GenerationResult.model_validate(response.json())
    assert [png_size(image) for image in result.images] == [(width, height)] * 2
    assert result.image == result.images[0]
    assert result.seed == 11 and result.params.seed == 11
    assert (result.params.steps, result.params.mode, result.params.guidance) == (2, "text2img", 0.0)
    assert result.worker_id == "test-worker" and result.model == "demo"
    assert result.timings.total_ms >= result.timings.generate_ms > 0


def test_same_seed_gives_the_same_bytes(worker):
    first, second, other = (generate(worker, seed=seed, **SMALL).json()["image"] for seed in (5, 5, 6))
    assert first == second
    assert first != other


def test_seed_is_random_when_absent_and_always_returned(worker):
    seeds = {generate(worker, **SMALL).json()["seed"] for _ in range(2)}
    assert len(seeds) == 2 and all(0 <= seed < 2**32 for seed in seeds)


def test_lora_scale_changes_the_image(worker):
    with_lora, without = (generate(worker, seed=3, lora_scale=scale, **SMALL).json() for scale in (1.0, 0.0))
    assert with_lora["params"]["lora_scale"] == 1.0 and without["params"]["lora_scale"] == 0.0
    assert with_lora["image"] != without["image"]


def test_retouch_keeps_the_input_aspect(worker):
    photo = Image.linear_gradient("L").resize((300, 200)).convert("RGB")
    response = generate(worker, init_image=png_b64(photo), width=192, steps=4, strength=0.5, seed=1)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["params"]["mode"] == "retouch" and result["params"]["strength"] == 0.5
    assert png_size(result["image"]) == (192, 128)


def test_get_generate_with_query_parameters(worker):
    response = httpx.get(
        f"{worker.url}/generate", params={"prompt": "a portrait", "steps": "2", "width": "128", "height": "128",
                                          "seed": "9", "lora_scale": "0.5"}, timeout=WAIT,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert png_size(body["image"]) == (128, 128)
    assert (body["params"]["steps"], body["params"]["lora_scale"], body["seed"]) == (2, 0.5, 9)


def test_stream_reports_every_step_then_the_result(worker):
    with httpx.stream("POST", f"{worker.url}/generate/stream", json={"prompt": "a portrait", **SMALL, "steps": 4},
                      timeout=WAIT) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/x-ndjson")
        events = list(stream_events(response))
    progress, last = events[:-1], events[-1]
    assert [(e["event"], e["step"], e["total"]) for e in progress] == [("progress", step, 4) for step in range(5)]
    assert all(e["worker_id"] == "test-worker" for e in progress)
    assert last["event"] == "result"
    assert png_size(GenerationResult.model_validate(last["result"]).image) == (128, 128)


def test_prefer_return_minimal_leaves_out_the_first_image_repeated(worker):
    """``Prefer: return=minimal`` (web fronts send it): every image once, no ``image``; by default both."""
    job = {"prompt": "a portrait", **SMALL, "seed": 3}
    full = httpx.post(f"{worker.url}/generate", json=job, timeout=WAIT)
    assert full.json()["image"] == full.json()["images"][0] and "preference-applied" not in full.headers
    for prefer in ("return=minimal", "respond-async, Return=Minimal; x=1"):
        minimal = httpx.post(f"{worker.url}/generate", json=job, headers={"Prefer": prefer}, timeout=WAIT)
        assert minimal.headers["preference-applied"] == MINIMAL_RESULT
        assert "image" not in minimal.json() and minimal.json()["images"] == full.json()["images"]
    other = httpx.post(f"{worker.url}/generate", json=job, headers={"Prefer": "return=representation"}, timeout=WAIT)
    assert other.json()["image"] == full.json()["image"] and "preference-applied" not in other.headers
    with httpx.stream("POST", f"{worker.url}/generate/stream", json=job, headers={"Prefer": MINIMAL_RESULT},
                      timeout=WAIT) as response:
        assert response.headers["preference-applied"] == MINIMAL_RESULT
        last = list(stream_events(response))[-1]
    assert "image" not in last["result"] and last["result"]["images"] == full.json()["images"]

    async def through_the_web_fronts_client() -> GenerationResult:
        client = WorkerClient(worker.url)
        try:
            return (await client.generate(job)).result
        finally:
            await client.aclose()

    result = asyncio.run(through_the_web_fronts_client())
    assert result.image is None and result.images == full.json()["images"]


def test_stream_of_a_retouch_announces_the_real_step_count(worker):
    photo = Image.new("RGB", (128, 128), (200, 120, 90))
    with httpx.stream("GET", f"{worker.url}/generate/stream", timeout=WAIT, params={
        "prompt": "a portrait", "width": 128, "height": 128, "steps": 8, "strength": 0.5, "seed": 2,
    }) as response:
        text2img = list(stream_events(response))
    with httpx.stream("POST", f"{worker.url}/generate/stream", timeout=WAIT, json={
        "prompt": "a portrait", "width": 128, "height": 128, "steps": 8, "strength": 0.5,
        "init_image": png_b64(photo),
    }) as response:
        retouch = list(stream_events(response))
    assert {e["total"] for e in text2img[:-1]} == {8}
    totals = {e["total"] for e in retouch[:-1]}
    assert totals == {4}, totals
    assert [e["step"] for e in retouch[:-1]] == list(range(5))
    assert retouch[-1]["event"] == "result"


def test_leaving_a_stream_cancels_the_job_at_the_next_step(worker):
    before = metric_values(worker.url)
    job = {"prompt": "a portrait", "width": 256, "height": 256, "steps": 100}
    with httpx.stream("POST", f"{worker.url}/generate/stream", json=job, timeout=WAIT) as response:
        for event in stream_events(response):
            if event["step"] >= 2:
                break
    poll_readyz(worker.url, lambda body: not body["busy"], "the cancelled job's end")
    after = metric_values(worker.url)
    cancelled = "/generate/stream", "cancelled"
    assert requests_total(after, *cancelled) == requests_total(before, *cancelled) + 1
    steps_run = growth(before, after, "portrait_worker_denoising_steps_total")
    assert 2 <= steps_run < 100
    assert after[("portrait_worker_images_total", ())] == before[("portrait_worker_images_total", ())]


def growth(before: dict, after: dict, name: str) -> float:
    """How much an unlabelled metric grew between two ``metric_values`` readings."""
    return after[(name, ())] - before[(name, ())]


def test_metrics_move_after_a_request(worker):
    before = metric_values(worker.url)
    assert generate(worker, **SMALL).status_code == 200
    after = metric_values(worker.url)
    assert requests_total(after, "/generate", "ok") == requests_total(before, "/generate", "ok") + 1
    assert growth(before, after, "portrait_worker_images_total") == 1
    assert growth(before, after, "portrait_worker_denoising_steps_total") == 2
    assert growth(before, after, "portrait_worker_steps_per_second_count") == 1
    assert after[("portrait_worker_request_duration_seconds_count", (("endpoint", "/generate"),))] > 0
    assert after[("portrait_worker_ready", ())] == 1.0 and after[("portrait_worker_queue_depth", ())] == 0.0
    info = [key for key in after if key[0] == "portrait_worker_info"]
    assert info and ("model", "demo") in info[0][1] and ("attention", "sdpa") in info[0][1]
    assert not [key for key in after if key[0].startswith("portrait_worker_gpu_memory")]  # CPU worker


def test_request_id_is_echoed_and_logged_as_json(worker):
    response = httpx.post(f"{worker.url}/generate", json={"prompt": "a portrait", **SMALL},
                          headers={"X-Request-ID": "req-42"}, timeout=WAIT)
    assert response.headers["x-request-id"] == "req-42"
    assert len(httpx.get(f"{worker.url}/").headers["x-request-id"]) == 32
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and '"req-42"' not in worker.log():
        time.sleep(0.1)
    line = next(line for line in worker.log().splitlines() if '"req-42"' in line)
    record = json.loads(line[line.index("{"):])
    assert record["endpoint"] == "/generate" and record["status"] == 200 and record["outcome"] == "ok"
    assert record["node"] == "test-worker" and record["duration_ms"] > 0
    assert record["params"]["width"] == 128 and "prompt" not in record["params"]


def test_head_and_get_root_answer(worker):
    head = httpx.head(f"{worker.url}/", timeout=10)
    assert head.status_code == 200 and head.content == b""
    assert httpx.get(f"{worker.url}/", timeout=10).json()["node"] == "test-worker"


def test_unknown_paths_and_methods_give_error_bodies(worker):
    for response in (httpx.get(f"{worker.url}/nope", timeout=10), httpx.put(f"{worker.url}/generate", timeout=10)):
        body = ErrorBody.model_validate(response.json())
        assert response.status_code in (404, 405) and body.error in ("not_found", "method_not_allowed")


def test_invalid_request_names_the_field_and_range(worker):
    response = generate(worker, width=100, height=128)
    assert response.status_code == 422
    body = ErrorBody.model_validate(response.json())
    assert body.error == "invalid_request"
    assert body.fields == [{"field": "width", "message": "must be a multiple of 16 for z-image models",
                            "allowed": "an integer from 64 to 2048, a multiple of 16"}]
    assert "width" in body.detail and "64 to 2048" in body.detail


def test_full_queue_answers_503_and_a_departed_waiter_is_dropped(worker):
    """queue_size=1: A runs, B waits, C is refused; B's client leaves and B never runs."""
    before = metric_values(worker.url)
    with httpx.stream("POST", f"{worker.url}/generate/stream",
                      json={"prompt": "job A", "width": 256, "height": 256, "steps": 100}, timeout=WAIT) as job_a:
        events = stream_events(job_a)
        assert next(events)["step"] == 0  # A is running
        body = json.dumps({"prompt": "job B", **SMALL}).encode()
        waiter = socket.create_connection(("127.0.0.1", int(worker.url.rsplit(":", 1)[1])))
        try:
            waiter.sendall(b"POST /generate HTTP/1.1\r\nHost: worker\r\nContent-Type: application/json\r\n"
                           b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            poll_readyz(worker.url, lambda b: b["queue_depth"] == 1, "job B waiting")
            refused = generate(worker, **SMALL)
            assert refused.status_code == 503
            assert ErrorBody.model_validate(refused.json()).error == "busy"
            assert int(refused.headers["retry-after"]) >= 1
        finally:
            waiter.close()
        state = poll_readyz(worker.url, lambda b: b["queue_depth"] == 0, "job B dropped")
        assert state["busy"] is True  # A still runs: B left the queue without running
    poll_readyz(worker.url, lambda b: not b["busy"], "job A cancelled")
    after = metric_values(worker.url)
    assert requests_total(after, "/generate", "dropped") == requests_total(before, "/generate", "dropped") + 1
    assert requests_total(after, "/generate", "busy") == requests_total(before, "/generate", "busy") + 1
    assert after[("portrait_worker_images_total", ())] == before[("portrait_worker_images_total", ())]
    assert generate(worker, **SMALL).status_code == 200


def test_sigterm_lets_the_running_job_finish_then_exits_cleanly(worker):
    """Runs last among the tests of the module's worker: it stops that worker."""
    with httpx.stream("POST", f"{worker.url}/generate/stream", json={"prompt": "a portrait", **SMALL, "steps": 6},
                      timeout=WAIT) as response:
        events = stream_events(response)
        assert next(events)["step"] == 0
        worker.proc.send_signal(signal.SIGTERM)
        rest = list(events)
    assert rest[-1]["event"] == "result" and [e["step"] for e in rest[:-1]] == [1, 2, 3, 4, 5, 6]
    # uvicorn re-raises the signal once its graceful shutdown is done: the usual exit status.
    assert worker.proc.wait(timeout=WAIT) == -signal.SIGTERM
    assert "readiness: not ready (shutting down)" in worker.log()
    assert "Traceback" not in worker.log()


# --------------------------------------------------------------------------- faults and exits


def test_out_of_memory_answers_507_then_repeated_ooms_exit_with_exit_oom(side_workers):
    worker = wait_ready(side_workers["oom"])
    oom = generate(worker, prompt="OOM-ME portrait", **SMALL)
    assert oom.status_code == 507
    body = ErrorBody.model_validate(oom.json())
    assert body.error == "out_of_memory"
    assert "out of memory" in body.detail.lower() and "MemoryError" in body.detail
    assert "smaller resolution or fewer images" in body.detail
    state = httpx.get(f"{worker.url}/readyz", timeout=10)
    assert state.status_code == 200 and state.json()["consecutive_ooms"] == 1
    assert generate(worker, **SMALL).status_code == 200  # a success resets the count
    assert httpx.get(f"{worker.url}/readyz", timeout=10).json()["consecutive_ooms"] == 0
    assert generate(worker, prompt="OOM-ME again", **SMALL).status_code == 507
    assert metric_values(worker.url)[("portrait_worker_out_of_memory_total", ())] == 2
    with httpx.stream("POST", f"{worker.url}/generate/stream", json={"prompt": "OOM-ME streamed", **SMALL},
                      timeout=WAIT) as response:
        events = list(stream_events(response))
    assert [e["step"] for e in events[:-1]] == [0, 1, 2]
    assert events[-1]["event"] == "error" and events[-1]["status"] == 507
    assert events[-1]["error"]["error"] == "out_of_memory"
    assert worker.proc.wait(timeout=WAIT) == EXIT_OOM
    assert "2 jobs in a row ran out of memory" in worker.log()


def test_die_at_step_kills_the_worker_abruptly(side_workers):
    worker = wait_ready(side_workers["die"])
    with pytest.raises(httpx.TransportError):
        generate(worker, **SMALL)
    assert worker.proc.wait(timeout=WAIT) == -signal.SIGKILL


def test_a_stalled_denoising_loop_makes_readyz_503_while_the_worker_still_answers(side_workers):
    worker = wait_ready(side_workers["stall"])
    assert generate(worker, **SMALL).status_code == 200  # no marker: no stall
    assert httpx.get(f"{worker.url}/readyz", timeout=10).json()[STALLED_KEY] is None

    def stalling_job() -> None:
        with contextlib.suppress(httpx.HTTPError):  # it ends when the worker is killed
            job = {**SMALL, "steps": 4, "prompt": "STALL-ME portrait"}
            httpx.post(f"{worker.url}/generate", json=job, timeout=WAIT)

    stuck = threading.Thread(target=stalling_job, daemon=True)
    stuck.start()
    try:
        body = poll_readyz(worker.url, lambda b: b[STALLED_KEY], "a stall")
        answer = httpx.get(f"{worker.url}/readyz", timeout=10)
        assert answer.status_code == 503 and not answer.json()["ready"]
        report = re.fullmatch(r"stalled: no denoising step for ([\d.]+) s \(usual step ([\d.]+) s, limit ([\d.]+) s\)",
                              body[STALLED_KEY])
        assert report, body[STALLED_KEY]
        silent, usual, limit = map(float, report.groups())
        assert abs(limit - max(1.0, 10 * usual)) < 0.1  # --stall-floor 1, the default factor 10
        assert silent >= limit and body["stalled_for"] >= silent - 0.1  # the report rounds to 0.1 s: >=
        assert body["reason"] == body[STALLED_KEY] and body["busy"]
        assert httpx.get(f"{worker.url}/healthz", timeout=10).status_code == 200
    finally:
        worker.proc.kill()  # its generation thread sleeps on: nothing else ends it
        worker.proc.wait(timeout=WAIT)
        stuck.join(timeout=WAIT)


def test_missing_model_exits_with_exit_load_failed(side_workers):
    worker = side_workers["missing"]
    assert worker.proc.wait(timeout=WAIT) == EXIT_LOAD_FAILED
    log = worker.log()
    assert "cannot load model" in log and "does not exist" in log
    assert "Traceback" not in log


# --------------------------------------------------------------------------- in-process units


def test_invalid_settings_exit_2_with_a_clear_message():
    for args, env in (["--queue-size", "-1"], {}), ([], {"PORTRAIT_PORT": "abc"}), ([], {FAULT_OOM_AT_STEP: "0"}):
        done = subprocess.run([sys.executable, "-m", "webui.worker", *args], env={**os.environ, **env},
                              capture_output=True, text=True, timeout=WAIT)
        assert done.returncode == 2 and "invalid setting" in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_scheduler_runs_one_job_queues_one_refuses_the_next_and_drops_a_departed_waiter():
    release = threading.Event()

    async def scenario() -> None:
        scheduler = JobScheduler(queue_size=1)
        try:
            running = scheduler.submit(lambda cancel: release.wait(WAIT) and "A")
            waiting = scheduler.submit(lambda cancel: "B")
            for _ in range(100):  # let A reach the thread
                if scheduler.busy:
                    break
                await asyncio.sleep(0.01)
            assert (scheduler.busy, scheduler.queue_depth) == (True, 1)
            with pytest.raises(QueueFull) as refused:
                scheduler.submit(lambda cancel: "C")
            assert refused.value.retry_after >= 1
            answer = http_error(refused.value)  # the worker app's one mapping to HTTP
            assert answer.status == 503 and answer.body.error == "busy"
            assert int(answer.headers["Retry-After"]) >= 1
            assert waiting.abandon() == "dropped"
            with pytest.raises(JobCancelled):
                await waiting.task
            assert scheduler.queue_depth == 0 and scheduler.busy
            later = scheduler.submit(lambda cancel: "D")
            release.set()
            assert (await running.task, await later.task) == ("A", "D")
            assert (scheduler.busy, scheduler.queue_depth) == (False, 0)
        finally:
            release.set()
            scheduler.close()

    asyncio.run(scenario())


def one_step_job(step: threading.Event) -> Callable[[threading.Event], str]:
    """Job A: one step, which lasts until ``step`` is set; it stops there if its client left."""
    def job(cancel: threading.Event) -> str:
        step.wait(WAIT)
        if cancel.is_set():
            raise JobCancelled("stopped at the next step")
        return "A"
    return job


async def cancelled_then_next(step: threading.Event, running: Job, admitted: Job) -> None:
    """End A's step: A stops (its client left), then B, admitted behind it, runs."""
    step.set()
    with pytest.raises(JobCancelled):
        await running.task
    assert await admitted.task == "B"


def test_a_cancelled_running_job_frees_its_place_for_the_next():
    """queue_size=0 (behind HAProxy): B is refused while A runs; once A's client left, B is
    admitted (it starts when A stops at its next step) and C is refused again."""
    step = threading.Event()

    async def scenario() -> None:
        scheduler = JobScheduler(queue_size=0)
        try:
            running = scheduler.submit(one_step_job(step))
            for _ in range(100):
                if scheduler.busy:
                    break
                await asyncio.sleep(0.01)
            with pytest.raises(QueueFull):
                scheduler.submit(lambda cancel: "B")
            assert running.abandon() == "cancelled"
            admitted = scheduler.submit(lambda cancel: "B")
            with pytest.raises(QueueFull):
                scheduler.submit(lambda cancel: "C")
            await cancelled_then_next(step, running, admitted)
        finally:
            step.set()
            scheduler.close()

    asyncio.run(scenario())


def test_a_job_sent_before_the_worker_heard_the_last_client_leave_is_admitted_within_the_grace():
    """HAProxy frees the slot the moment A's client leaves and sends B at once; the worker hears of the departure
    a little later (here 20 ms). B waits for its place instead of a 503; C, with no departure to wait for, is
    refused once its grace has passed."""
    step = threading.Event()

    async def scenario() -> None:
        scheduler = JobScheduler(queue_size=0)
        try:
            running = scheduler.submit(one_step_job(step))
            asyncio.get_running_loop().call_later(0.02, running.abandon)
            sent = time.monotonic()
            admitted = await scheduler.admit(lambda cancel: "B", grace=5.0)
            assert 0.015 < time.monotonic() - sent < 2.0
            sent = time.monotonic()
            with pytest.raises(QueueFull):
                await scheduler.admit(lambda cancel: "C", grace=0.1)
            assert time.monotonic() - sent >= 0.1
            await cancelled_then_next(step, running, admitted)
        finally:
            step.set()
            scheduler.close()

    asyncio.run(scenario())


def test_fault_plan_reads_env_and_raises_the_device_oom():
    plan = FaultPlan.from_env({FAULT_OOM_AT_STEP: "2", "PORTRAIT_FAULT_PROMPT_MARKER": "boom"})
    assert plan.wrap(None, "a calm prompt", cuda=False) is None
    hook = plan.wrap(None, "boom portrait", cuda=False)
    hook(1, 8)
    with pytest.raises(MemoryError):
        hook(2, 8)
    with pytest.raises(torch.cuda.OutOfMemoryError) as cuda_oom:
        plan.wrap(None, "boom", cuda=True)(2, 8)
    assert is_out_of_memory(cuda_oom.value) and is_out_of_memory(MemoryError()) and not is_out_of_memory(ValueError())
    assert not FaultPlan.from_env({}).active
    with pytest.raises(ValidationError):
        FaultPlan.from_env({FAULT_OOM_AT_STEP: "soon"})


def test_the_step_cpu_fault_makes_each_step_use_at_least_its_cpu_time():
    plan = FaultPlan.from_env({FAULT_STEP_CPU_SECONDS: "0.05", FAULT_PROMPT_MARKER: "[slow]"})
    assert plan.active and plan.wrap(None, "a calm prompt", cuda=False) is None
    steps: list[tuple[int, int]] = []
    began = time.thread_time()
    hook = plan.wrap(lambda step, total: steps.append((step, total)), "[slow] portrait", cuda=False)
    for step in (1, 2, 3):
        hook(step, 3)
    assert time.thread_time() - began >= 3 * 0.05  # CPU time, whatever the CPU's speed
    assert steps == [(1, 3), (2, 3), (3, 3)]
    with pytest.raises(ValidationError):
        FaultPlan.from_env({FAULT_STEP_CPU_SECONDS: "0"})


def test_gpu_memory_gauges_read_torch_cuda_when_on_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device: 1000 + device)
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device: 2000)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device: 3000)
    device: list[int | None] = [None]
    metrics = WorkerMetrics()
    metrics.track(queue_depth=lambda: 0, busy=lambda: False, ready=lambda: True, cuda_device=lambda: device[0])
    assert b"gpu_memory" not in metrics.render()[0]
    device[0] = 1
    text = metrics.render()[0].decode()
    assert 'portrait_worker_gpu_memory_allocated_bytes{device="1"} 1001.0' in text
    assert 'portrait_worker_gpu_memory_reserved_bytes{device="1"} 2000.0' in text
    assert 'portrait_worker_gpu_memory_max_allocated_bytes{device="1"} 3000.0' in text
    assert (cuda_index("cuda"), cuda_index("cuda:1"), cuda_index("cpu")) == (0, 1, None)


def test_freeing_memory_after_an_oom_empties_the_cuda_cache_only_on_cuda(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append("empty_cache"))
    service = GenerationService(WorkerSettings(), lambda settings: None, FaultPlan(), WorkerMetrics(),
                                lambda code: None)
    service.free_memory()
    assert calls == []
    service.cuda_device = 0
    service.free_memory()
    assert calls == ["empty_cache"]


def test_upload_checks_name_the_problem():
    def rejected(text: str, **limits) -> str:
        with pytest.raises(UploadError) as error:
            decode_upload(text, limits.get("max_bytes", 10**7), limits.get("max_pixels", 4096 * 4096))
        return str(error.value)

    photo = Image.new("RGB", (96, 64), (10, 20, 30))
    assert decode_upload("data:image/png;base64," + png_b64(photo), 10**7, 10**7).size == (96, 64)
    assert decode_upload(png_b64(photo.convert("RGBA"), "WEBP"), 10**7, 10**7).mode == "RGB"
    assert "base64" in rejected("not base64!")
    assert "not a PNG, JPEG or WebP" in rejected(base64.b64encode(b"plain text").decode())
    assert "not a PNG, JPEG or WebP" in rejected(png_b64(photo, "GIF"))
    assert "truncated or corrupt" in rejected(png_b64(photo)[:120])
    assert "byte limit" in rejected(png_b64(photo), max_bytes=100)
    assert "4000-pixel limit" in rejected(png_b64(photo), max_pixels=4000)
    assert "at least 64 pixels" in rejected(png_b64(Image.new("RGB", (64, 32))))


def test_validation_problems_follow_the_model_family():
    sdxl = Limits(family=ModelFamily.SDXL, max_steps=50, max_images=2)
    with pytest.raises(ApiError) as error:
        validate_job({"prompt": "x", "width": 100, "steps": 60, "num_images": 3}, sdxl)
    fields = {problem["field"]: problem for problem in error.value.body.fields}
    assert fields["width"]["message"] == "must be a multiple of 8 for sdxl models"
    assert fields["width"]["allowed"] == "an integer from 64 to 2048, a multiple of 8"
    assert fields["steps"]["allowed"] == "an integer from 1 to 50"
    assert fields["num_images"]["allowed"] == "an integer from 1 to 2"
    typed = validation_problems([{"type": "float_parsing", "loc": ("guidance",), "msg": "bad"}], sdxl)
    assert typed == [{"field": "guidance", "message": "bad", "allowed": "a number from 0.0 to 30.0"}]
    assert invalid_request(typed).status == 422
    with pytest.raises(ApiError) as blank:
        validate_job({"prompt": " \n\t "}, sdxl)
    assert blank.value.body.fields[0]["field"] == "prompt"
    assert "only spaces" in blank.value.body.detail


class BuggyPipeline:
    """A pipeline with bugs on purpose: prompts with "bug" break the worker's own code path,
    prompts with "fail" make generation fail. The warm-up works."""

    family = ModelFamily.ZIMAGE
    model_name = "buggy"

    def describe(self) -> dict:
        return {"device": "cpu"}

    def provenance(self):
        from webui.recipe import Provenance

        return Provenance(model=self.model_name)

    def effective_params(self, request, seed, init_image=None):
        # Asked once when the job is admitted (its cost) and again in the generation thread, as the job runs.
        if "bug" in request.prompt and threading.current_thread().name.startswith("generation"):
            raise KeyError("a bug outside generation")
        from webui.schema import EffectiveParams

        return EffectiveParams(prompt=request.prompt, negative_prompt="", steps=request.steps or 1, guidance=0.0,
                               width=64, height=64, seed=seed, lora_scale=1.0, num_images=1, mode="text2img")

    def warm_up(self, params):
        return self.generate(params)

    def generate(self, params, init_image=None, on_step=None):
        if params.prompt != PROBE_PROMPT and "fail" in params.prompt:
            raise ValueError("the pipeline failed")
        return [Image.new("RGB", (64, 64))]


def test_unexpected_errors_are_500_error_bodies_without_a_traceback():
    app = create_app(WorkerSettings(worker_id="buggy"), pipeline_loader=lambda settings: BuggyPipeline(),
                     faults=FaultPlan())
    with TestClient(app, raise_server_exceptions=False) as client:
        deadline = time.monotonic() + WAIT
        while client.get("/readyz").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.post("/generate", json={"prompt": "ok"}).status_code == 200
        bug = client.post("/generate", json={"prompt": "bug"}, headers={"X-Request-ID": "bug-1"})
        assert bug.status_code == 500 and bug.json()["error"] == "internal_error"
        assert "bug-1" in bug.json()["detail"] and "Traceback" not in bug.text and "KeyError" not in bug.text
        failed = client.post("/generate", json={"prompt": "fail"})
        assert failed.status_code == 500 and failed.json()["error"] == "generation_failed"
        assert "Traceback" not in failed.text
        lines = [json.loads(line) for line in client.post("/generate/stream", json={"prompt": "bug"}).text.splitlines()]
        assert lines[-1]["event"] == "error" and lines[-1]["status"] == 500
        assert lines[-1]["error"]["error"] == "internal_error"
        assert client.get("/readyz").status_code == 200


def test_generating_seconds_include_the_running_job() -> None:
    """The duty-cycle counter moves while a job runs (read at scrape time), not in steps of a whole job."""
    from webui.worker.metrics import GeneratingClock, WorkerMetrics

    now = [10.0]
    clock = GeneratingClock(clock=lambda: now[0])
    clock.begin()
    now[0] = 10.25
    assert clock.seconds() == pytest.approx(0.25)  # mid-job
    now[0] = 11.0
    clock.end()
    now[0] = 20.0
    assert clock.seconds() == pytest.approx(1.0)  # idle time does not count
    clock.end()  # a second end changes nothing
    assert clock.seconds() == pytest.approx(1.0)

    metrics = WorkerMetrics()
    metrics.generating.begin()
    text = metrics.render()[0].decode()
    value = next(float(line.split()[1]) for line in text.splitlines()
                 if line.startswith("portrait_worker_generating_seconds_total "))
    assert value >= 0 and "# TYPE portrait_worker_generating_seconds_total counter" in text


def test_a_marked_job_draws_its_seed_from_the_request_and_is_answered_while_the_jobs_service_is_away(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A job the balancer marks for a record: its seed follows the balancer's request id (a replay on another
    worker draws the same image), and a jobs service that does not answer (its record tried again for a while)
    costs the client only the job id."""
    from webui.worker import job_record

    monkeypatch.setattr(job_record, "RECORD_FOR_S", 0.5)
    away = f"http://127.0.0.1:{free_port()}"
    app = create_app(WorkerSettings(model="standin:0.01", warmup_steps=1, jobs_url=away), faults=FaultPlan())
    job = {"prompt": "a portrait", "width": 64, "height": 64, "steps": 2}
    with TestClient(app) as client:
        deadline = time.monotonic() + WAIT
        while client.get("/readyz").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        first, again, other = (client.post("/generate", json=job, headers={RECORD_JOB_HEADER: "1", "X-Request-ID": id_})
                               for id_ in ("request-1", "request-1", "request-2"))
        stream = client.post("/generate/stream", json=job, headers={RECORD_JOB_HEADER: "1"})
    assert first.status_code == again.status_code == other.status_code == stream.status_code == 200, first.text
    assert first.json()["seed"] == again.json()["seed"] != other.json()["seed"]
    assert "x-job-id" not in first.headers and "x-job-id" not in stream.headers
    assert json.loads(stream.text.splitlines()[-1])["event"] == "result"
