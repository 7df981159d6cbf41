"""Each configuration on the twin: latency along the serving path and its images against eager bfloat16."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from PIL import Image

from bench.gpu.rows import SERVING, Size
from bench.gpu.timing import serving_job, time_paths
from bench.report import LatencyStats
from webui.worker.pipelines.configuration import Choice, Configuration, Flags, choose_configuration
from webui.worker.pipelines.quality import QualityGate, Selection, Verdict, select

logger = logging.getLogger(__name__)

QUALITY_SEEDS = (1000, 1001)
"""The fixed seeds every configuration draws for the image comparison."""
REFERENCE = Configuration(dtype=Choice("bfloat16", "the reference"), compile=Choice(False, "the reference"),
                          fp8=Choice(False, "the reference"), attention=Choice("sdpa", "the reference"))
"""Eager bfloat16 with PyTorch SDPA: what every faster configuration is compared with."""

Build = Callable[[Configuration], object]
"""Builds (or rebuilds) the twin's pipeline in a configuration's dtype; returns the text-to-image pipeline."""


@dataclass
class Measured:
    """One configuration's timings, images and verdict."""

    configuration: Configuration
    stats: LatencyStats
    first_call_s: float | None
    images: list[Image.Image]
    verdict: Verdict | None = None


def candidates(facts, fp8: bool) -> list[Configuration]:
    """The chooser's fastest configuration for ``facts`` and its fallbacks, the reference left out."""
    fastest = choose_configuration(facts, Flags(fp8="auto" if fp8 else "off"))
    chain = [fastest, *fastest.fallbacks("a fallback, measured")]
    return [configuration for configuration in chain if configuration.label != REFERENCE.label]


def measurement_order(configurations: list[Configuration]) -> list[Configuration]:
    """The reference first; then by dtype and attention (one build each), least changed first (FP8 is last:
    it quantizes the weights in place)."""
    rest = sorted(configurations, key=lambda c: (str(c.dtype.value), str(c.attention.value),
                                                 bool(c.compile.value), bool(c.fp8.value)))
    return [REFERENCE, *rest]


def settings_for(configuration: Configuration, device: str):
    """The worker settings that make ``plan_device`` plan ``configuration`` on ``device``."""
    from webui.settings import WorkerSettings

    return WorkerSettings(device=device, dtype=str(configuration.dtype.value),
                          attention=str(configuration.attention.value),
                          compile="on" if configuration.compile.value else "off",
                          fp8="on" if configuration.fp8.value else "off", cpu_offload="off", vae_tiling="auto")


def measure_all(configurations: list[Configuration], build: Build, machine, device: str, size: Size, steps: int,
                runs: int, warmup: int, probe, gate: QualityGate,
                skipped: list[tuple[str, str]]) -> tuple[list[Measured], Selection]:
    """Measure the reference and every configuration; the gate's selection among them, fastest first.

    A configuration that fails (an import, a kernel, out of memory) goes into ``skipped`` with its error;
    the reference failing is fatal (nothing to compare with).
    """
    from webui.worker.pipelines.device import plan_device
    from webui.worker.pipelines.diffusers import PortraitPipeline

    measured: list[Measured] = []
    pipe, built_for = None, None
    for configuration in measurement_order(configurations):
        group = (configuration.dtype.value, configuration.attention.value)
        try:
            if pipe is None or group != built_for or _quantized(measured):
                pipe = None
                probe.release()
                pipe, built_for = build(configuration), group
            _reset_compiler()
            plan = plan_device(settings_for(configuration, device), machine)
            portrait = PortraitPipeline.from_pipeline(pipe, plan, model_name=f"twin {configuration.label}")
            timing = time_paths({SERVING: serving_job(portrait, size, steps)}, runs, warmup, probe)[SERVING]
            images = [serving_job(portrait, size, steps)(seed)[0] for seed in QUALITY_SEEDS]
        except Exception as exc:  # noqa: BLE001 - one GPU call: a configuration that fails is reported, not fatal
            if configuration is REFERENCE or not measured:
                raise
            logger.exception("%s failed", configuration.label)
            skipped.append((configuration.label, f"{type(exc).__name__}: {exc}".splitlines()[0][:300]))
            pipe = portrait = None  # whatever it left half-applied is rebuilt for the next one
            continue
        measured.append(Measured(configuration, timing.stats, timing.first_call_s, images))
        logger.info("%s: p50 %.0f ms", configuration.label, timing.stats.median_ms)
    reference = measured[0].images
    for item in measured[1:]:
        item.verdict = gate.verdict(reference, item.images)
    by_label = {item.configuration.label: item for item in measured}
    fastest_first = sorted(measured[1:], key=lambda item: item.stats.median_ms)
    selection = select([item.configuration for item in fastest_first], lambda c: by_label[c.label].images,
                       reference, gate, baseline=REFERENCE, label=lambda c: c.label)
    del pipe
    probe.release()
    return measured, selection


def _quantized(measured: list[Measured]) -> bool:
    """Whether the last configuration quantized the weights in place (the next one needs a fresh build)."""
    return bool(measured) and bool(measured[-1].configuration.fp8.value)


def _reset_compiler() -> None:
    import torch

    torch.compiler.reset()

