"""Path (a): what a worker serves, loaded and run in this process (the floor of every other path)."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable

from bench.harness.cluster_options import ClusterOptions
from bench.harness.generation import Job, check_image, pixels_digest
from webui.images import encode_png
from webui.schema import EffectiveParams, GenerationRequest
from webui.settings import WorkerSettings
from webui.worker.pipelines.base import Pipeline
from webui.worker.pipelines.loader import load_pipeline  # torch and diffusers only for a real model


def in_process_call(options: ClusterOptions) -> Callable[[Job], str]:
    """Load the model in this process; a call that runs a job on it and returns the pixel digest."""
    pipeline = load_in_process(options)

    def call(job: Job) -> str:
        return pixels_digest(pipeline.generate(job_params(pipeline, job))[0])

    return call


def load_in_process(options: ClusterOptions) -> Pipeline:
    """What a worker of ``options`` serves (``webui.worker.pipelines.loader.load_pipeline``), loaded in this process."""
    return load_pipeline(WorkerSettings(model=options.model, lora=options.lora, threads=options.threads))


def job_params(pipeline: Pipeline, job: Job) -> EffectiveParams:
    """``job`` as the pipeline's ``EffectiveParams``, as a worker makes them."""
    return pipeline.effective_params(GenerationRequest.model_validate(job.rest_body()), seed=job.seed)


class InProcessParts:
    """Path (a) for the layer report: generate, the worker's PNG encode and the clients' PNG check, timed apart.

    A call does all three, like a worker and its client would (so every path draws the same
    pixels), and appends each part's seconds to ``seconds``.
    """

    PARTS = ("generate", "encode", "check")

    def __init__(self, options: ClusterOptions) -> None:
        self.pipeline = load_in_process(options)
        self.seconds: dict[str, list[float]] = {part: [] for part in self.PARTS}

    def __call__(self, job: Job) -> str:
        marks = [time.perf_counter()]
        image = self.pipeline.generate(job_params(self.pipeline, job))[0]
        marks.append(time.perf_counter())
        encoded = encode_png(image)
        marks.append(time.perf_counter())
        digest = check_image(base64.b64decode(encoded), job)
        marks.append(time.perf_counter())
        for part, start, end in zip(self.PARTS, marks, marks[1:], strict=False):
            self.seconds[part].append(end - start)
        return digest

    def last(self, runs: int) -> dict[str, list[float]]:
        """Each part's last ``runs`` timings (the warm-up call left out)."""
        return {part: values[-runs:] for part, values in self.seconds.items()}
