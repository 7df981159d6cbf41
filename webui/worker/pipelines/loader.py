"""What a worker serves for its settings; the one place torch and diffusers are imported, and only when needed.

``load_pipeline`` gives the benchmarks' fixed-latency stand-in for ``--model standin:SECONDS``
(``webui.worker.pipelines.standin``: no torch, no diffusers, a worker ready in about a second), or
the real diffusers model (``webui.worker.pipelines.diffusers.PortraitPipeline``). For a real model
the cheap checks come first: what is named must exist and be a model of a known kind
(``webui.worker.pipelines.sources``), the device one this machine has (``device``, which needs
torch only); diffusers' seconds of imports come last, so a crash-looping worker learns what is
wrong at once. The demo model is built into the cache here when it is missing.
"""

from __future__ import annotations

import logging
from pathlib import Path

from webui.settings import WorkerSettings
from webui.worker.errors import ModelLoadError, one_line
from webui.worker.pipelines.base import Pipeline
from webui.worker.pipelines.demo import demo_dir, ensure_built, is_complete
from webui.worker.pipelines.sources import detect_family, resolve_source
from webui.worker.pipelines.standin import StandinPipeline, standin_latency

logger = logging.getLogger(__name__)


def load_pipeline(settings: WorkerSettings, place: bool = True) -> Pipeline:
    """The pipeline for ``settings.model``: ``standin:SECONDS[/step]`` (benchmarks and tests only) or a real model.

    ``place=False`` leaves a real model's weights in host memory (a warm standby's, until ``place``).
    Raises ``ModelLoadError`` (one line) for anything missing or wrong.
    """
    latency = standin_latency(settings.model)
    if latency is not None:
        return StandinPipeline.for_settings(settings, latency)
    source = resolve_source(settings.model, settings.lora, settings.cache_dir)
    if source.demo:
        try:
            ensure_demo_model(settings.cache_dir)
        except Exception as exc:  # e.g. a read-only or full cache dir
            why = f"cannot build the demo model in {settings.cache_dir} ({one_line(exc)})"
            raise ModelLoadError(f"model 'demo': {why}") from None
    family = detect_family(source)
    from webui.worker.pipelines.device import device_plan  # torch

    plan = device_plan(settings)
    from webui.worker.pipelines.diffusers import PortraitPipeline  # diffusers

    return PortraitPipeline.load(settings, source, family, plan, place=place)


def ensure_demo_model(cache_dir: Path) -> Path:
    """``<cache_dir>/demo-model``, built first when missing or incomplete (torch and diffusers only then)."""
    directory = demo_dir(cache_dir)
    if is_complete(directory):
        return directory.absolute()
    from webui.worker.pipelines.demo_build import write_demo_model  # torch, diffusers, transformers, peft

    return ensure_built(directory, write_demo_model)
