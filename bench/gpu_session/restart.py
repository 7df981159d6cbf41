"""Restart-to-ready with a warm compile cache: two fresh worker-like starts sharing one cache directory.

Each start is what a worker does before it reports ready (``webui.worker.serve``): point torch's caches
at the host's compile cache, build the model (the twin, standing in for loading the weights), place it
with the device plan (compile included), run the worker's warm-up, then two jobs at the measured size.
On a GPU each start is its own process (``python -m bench.gpu_session --restart-child SPEC``), so the
only thing the second inherits from the first is the cache directory; ``--tiny`` runs them in-process.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

CHILD_FLAG = "--restart-child"


@dataclass(frozen=True)
class StartSpec:
    """What one start builds and runs."""

    cache_dir: str
    tiny: bool
    width: int
    height: int
    steps: int
    settings: dict


@dataclass(frozen=True)
class Start:
    """One start's phases, in seconds."""

    build_s: float
    place_s: float
    warmup_s: float
    first_job_s: float
    second_job_s: float
    fxgraph_hits: int
    fxgraph_misses: int
    process_s: float = 0.0
    """The whole process, interpreter and imports included (0 in-process)."""

    @property
    def ready_s(self) -> float:
        """Build + place + warm-up: what passes before the worker reports ready."""
        return self.build_s + self.place_s + self.warmup_s


def run_start(spec: StartSpec) -> Start:
    """One start in this process (the child's body)."""
    from webui.worker.compile_cache import use_compile_cache

    use_compile_cache(Path(spec.cache_dir))
    import torch
    from torch._dynamo.utils import counters

    from assets.twin_model import TINY, ZIMAGE_TURBO, build_twin
    from bench.gpu.rows import Size
    from bench.gpu.timing import serving_job
    from webui.settings import WorkerSettings
    from webui.worker.pipelines.device import plan_device, probe_machine
    from webui.worker.pipelines.diffusers import PortraitPipeline
    from webui.worker.pipelines.warmup import self_check

    settings = WorkerSettings(**spec.settings)
    plan = plan_device(settings, probe_machine())
    sync = torch.cuda.synchronize if plan.device == "cuda" else (lambda: None)
    times = []

    def timed(action) -> object:
        started = time.perf_counter()
        result = action()
        sync()
        times.append(time.perf_counter() - started)
        return result

    pipe = timed(lambda: build_twin(plan.device, plan.dtype, TINY if spec.tiny else ZIMAGE_TURBO))
    portrait = timed(lambda: PortraitPipeline.from_pipeline(pipe, plan, model_name="twin"))
    timed(lambda: self_check(portrait, settings.warmup_steps))
    job = serving_job(portrait, Size(spec.width, spec.height), spec.steps)
    timed(lambda: job(0))
    timed(lambda: job(1))
    inductor = counters["inductor"]
    return Start(*times, fxgraph_hits=inductor["fxgraph_cache_hit"], fxgraph_misses=inductor["fxgraph_cache_miss"])


def measure_restarts(spec: StartSpec, starts: int = 2) -> list[Start]:
    """``starts`` starts one after the other on one cache directory (the first fills it)."""
    results = []
    for index in range(starts):
        logger.info("start %d of %d (compile cache %s)", index + 1, starts, spec.cache_dir)
        if spec.tiny:
            results.append(run_start(spec))
            continue
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "bench.gpu_session", CHILD_FLAG, json.dumps(asdict(spec))],
                              capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"start {index + 1} exited with {done.returncode}: {done.stderr[-2000:]}")
        start = Start(**json.loads(done.stdout.strip().splitlines()[-1]))
        results.append(Start(**{**asdict(start), "process_s": time.perf_counter() - started}))
    return results


def child_main(argument: str) -> int:
    """The child process: one start, its JSON on the last line of stdout."""
    start = run_start(StartSpec(**json.loads(argument)))
    print(json.dumps(asdict(start)))
    return 0
