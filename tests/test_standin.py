"""The benchmarks' fixed-latency stand-in: selectable only by name, and it keeps its latency and size contract.

It is not a model; nothing here says anything about a model's behaviour.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from starlette.testclient import TestClient

from bench.harness.processes import REPO
from bench.harness.waiting import wait_until
from webui.schema import GenerationRequest
from webui.settings import WorkerSettings
from webui.worker.app import create_app
from webui.worker.errors import ModelLoadError
from webui.worker.faults import FaultPlan
from webui.worker.pipelines import standin
from webui.worker.pipelines.loader import load_pipeline
from webui.worker.pipelines.standin import STANDIN_MODEL, STOPPED_S, StandinLatency, StandinPipeline, standin_latency
from webui.worker.pipelines.warmup import self_check

SECONDS = 0.2
SLACK = 0.5
"""Upper tolerance on a loaded 2-core machine; the lower bound is exact (the sleeps run to deadlines)."""


def test_only_a_standin_name_selects_it():
    assert WorkerSettings().model == "demo" and standin_latency(WorkerSettings().model) is None
    for model in ("demo", "awportrait-z", "sdxl", "owner/standin", "./standin"):
        assert standin_latency(model) is None
    assert standin_latency("standin:0.5") == StandinLatency(0.5) and standin_latency("standin:0") == StandinLatency(0)
    assert standin_latency("standin:0.25/step") == StandinLatency(0.25, per_step=True)
    for bad in ("standin:", "standin:abc", "standin:-1", "standin:nan", "standin:1e9", "standin:/step",
                "standin:0.1/job", "standin:0.1/step/step"):
        with pytest.raises(ModelLoadError, match="stand-in"):
            standin_latency(bad)


def test_worker_loader_serves_it_and_says_what_it_is():
    pipeline = load_pipeline(WorkerSettings(model=f"standin:{SECONDS}"))
    assert isinstance(pipeline, StandinPipeline) and pipeline.latency == StandinLatency(SECONDS)
    info = pipeline.describe()
    assert info["model"] == pipeline.model_name == STANDIN_MODEL == "standin (fixed latency, benchmark only)"
    assert info["seconds_per_job"] == SECONDS and info["lora"] is None
    assert load_pipeline(WorkerSettings(model="standin:0.05/step")).describe()["seconds_per_step"] == 0.05
    with pytest.raises(ModelLoadError, match="no LoRA"):
        load_pipeline(WorkerSettings(model="standin:0.1", lora="some/lora"))


def test_it_checks_its_inputs_as_the_real_pipeline_does():
    """Every pipeline validates at its boundary (``PipelineBase.check_inputs``), before sleeping or drawing."""
    pipeline = StandinPipeline(60.0, max_side=2048)  # a job that got through would take a minute
    text2img = pipeline.effective_params(GenerationRequest(prompt="x", width=512, height=512), seed=1)
    retouch = text2img.model_copy(update={"mode": "retouch", "strength": 0.5})
    for params, field in ((retouch, "init_image"), (text2img.model_copy(update={"width": 100}), "width"),
                          (text2img.model_copy(update={"num_images": 0}), "num_images")):
        with pytest.raises(ValueError, match=field):
            pipeline.generate(params)


@pytest.mark.parametrize("width,height,steps,images", [(512, 512, 4, 1), (96, 160, 8, 2)])
def test_latency_steps_and_size(width: int, height: int, steps: int, images: int):
    pipeline = StandinPipeline(SECONDS, max_side=2048)
    request = GenerationRequest(prompt="x", steps=steps, width=width, height=height, num_images=images)
    params = pipeline.effective_params(request, seed=7)
    reported: list[tuple[int, int, float]] = []
    started = time.perf_counter()
    result = pipeline.generate(params, on_step=lambda step, total: reported.append((step, total, time.perf_counter())))
    elapsed = time.perf_counter() - started
    assert SECONDS <= elapsed < SECONDS + SLACK
    total = steps * images  # a job's progress counts every image's steps, one image after the other
    assert [(s, t) for s, t, _ in reported] == [(i, total) for i in range(1, total + 1)]
    for step, total, at in reported:  # evenly spaced: step i is reported no earlier than i/total of the time
        assert at - started >= SECONDS * step / total
    assert [image.size for image in result] == [(width, height)] * images
    assert all(image.mode == "RGB" for image in result)


def test_per_step_a_jobs_time_follows_its_steps():
    pipeline = StandinPipeline(StandinLatency(SECONDS / 4, per_step=True), max_side=2048)
    for steps in (2, 8):
        params = pipeline.effective_params(GenerationRequest(prompt="x", steps=steps, width=64, height=64), seed=1)
        started = time.perf_counter()
        pipeline.generate(params)
        elapsed = time.perf_counter() - started
        assert SECONDS / 4 * steps <= elapsed < SECONDS / 4 * steps + SLACK


def test_images_are_deterministic_by_seed_and_on_step_can_stop_a_job():
    pipeline = StandinPipeline(0.0, max_side=2048)
    params = pipeline.effective_params(GenerationRequest(prompt="x", width=64, height=64, num_images=2), seed=3)
    first, second = pipeline.generate(params)
    again = pipeline.generate(params)
    assert first.tobytes() == again[0].tobytes() and second.tobytes() == again[1].tobytes()
    assert first.tobytes() != second.tobytes()

    def stop(step: int, total: int) -> None:
        raise RuntimeError("client left")

    with pytest.raises(RuntimeError, match="client left"):
        pipeline.generate(params, on_step=stop)


def test_a_stopped_process_makes_no_progress(monkeypatch: pytest.MonkeyPatch):
    """A step's sleep that wakes up late by more than STOPPED_S (as after SIGSTOP ... SIGCONT) moves the job's
    start: the steps after it keep their spacing instead of all arriving at once."""
    pipeline = StandinPipeline(0.4, max_side=2048)
    params = pipeline.effective_params(GenerationRequest(prompt="x", steps=4, width=64, height=64), seed=1)
    stop_s = STOPPED_S + 0.5
    sleep, stopped = time.sleep, []

    def sleep_once_stopped(seconds: float) -> None:
        sleep(seconds + (0 if stopped else stop_s))
        stopped.append(True)

    monkeypatch.setattr(standin.time, "sleep", sleep_once_stopped)
    reported: list[float] = []
    pipeline.generate(params, on_step=lambda step, total: reported.append(time.perf_counter()))
    assert len(reported) == 4
    assert reported[-1] - reported[0] >= 0.25  # steps 2-4 still 0.1 s apart after the stop, not at once


def test_a_process_stopped_between_steps_makes_no_progress_either():
    """Stopped outside a sleep (here: in a step's report), the steps after the stop keep their spacing too."""
    pipeline = StandinPipeline(0.4, max_side=2048)
    params = pipeline.effective_params(GenerationRequest(prompt="x", steps=4, width=64, height=64), seed=1)
    reported: list[float] = []

    def report(step: int, total: int) -> None:
        reported.append(time.perf_counter())
        if step == 1:
            time.sleep(STOPPED_S + 0.5)  # the process stopped right after its first step

    pipeline.generate(params, on_step=report)
    assert len(reported) == 4
    assert reported[-1] - reported[1] >= 0.15  # steps 2-4 still 0.1 s apart, not at once


MODEL_LIBRARIES = ("torch", "diffusers", "transformers")
"""What a real model's worker imports (seconds of its start) and a stand-in worker must not."""


def test_a_standin_worker_imports_no_model_library():
    # A fresh interpreter: the worker's app, its loader choosing the stand-in, one job, then what was imported.
    script = (
        "import sys\n"
        "import webui.worker.app\n"
        "from webui.schema import GenerationRequest\n"
        "from webui.settings import WorkerSettings\n"
        "from webui.worker.pipelines.loader import load_pipeline\n"
        "pipeline = load_pipeline(WorkerSettings(model='standin:0'))\n"
        "params = pipeline.effective_params(GenerationRequest(prompt='x', width=64, height=64), seed=1)\n"
        "assert pipeline.generate(params)[0].size == (64, 64)\n"
        f"print(sorted(name for name in {MODEL_LIBRARIES!r} if name in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", done.stdout


def test_a_standin_worker_is_ready_without_waiting_out_a_jobs_latency():
    """A stand-in has nothing to warm up: its worker's self-check draws without the latency, so a worker whose
    jobs take 30 s is ready in a moment; its jobs still take the 30 s (``test_latency_steps_and_size``)."""
    pipeline = StandinPipeline(30.0, max_side=2048)
    started = time.perf_counter()
    self_check(pipeline, steps=2)
    assert time.perf_counter() - started < 10
    app = create_app(WorkerSettings(worker_id="quick", model="standin:30"), faults=FaultPlan())
    with TestClient(app) as client:
        wait_until(lambda: client.get("/readyz").status_code == 200, "the stand-in worker ready", 10, 0.05)
        assert client.get("/readyz").json()["pipeline"]["seconds_per_job"] == 30
