"""One benchmark run: build each variant's twin, time its paths and limits, a warm standby's takeover."""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from bench.gpu.limits import search_limit
from bench.gpu.probe import Probe
from bench.gpu.report import Report
from bench.gpu.rows import DIFFUSERS, SERVING, BuildRow, LatencyRow, PromotionRow, Size, Variant
from bench.gpu.timing import bare_job, serving_job, time_paths

if TYPE_CHECKING:
    from webui.worker.pipelines.diffusers import PortraitPipeline

logger = logging.getLogger(__name__)


def variants(args: argparse.Namespace) -> list[Variant]:
    """Every combination asked for, ``--compile`` outermost (so by default all eager variants come first)."""
    return [Variant(dtype, attention, mode == "on")
            for mode in args.compile for dtype in args.dtypes for attention in args.attention]


def searches_limits(variant: Variant, args: argparse.Namespace) -> bool:
    """Whether ``variant`` gets the memory-limit search: eager (compiling every tried shape would take hours)."""
    return args.oom and not variant.compile and variant.attention == args.attention[0]


def measure_variant(report: Report, variant: Variant, portrait: PortraitPipeline, args: argparse.Namespace,
                    probe: Probe) -> None:
    """Latency rows for every size, then (if asked) the memory limits, into ``report``."""
    pipe = portrait.model.text2img
    for size in args.sizes:
        logger.info("%s at %s: %d warm-up + %d timed runs per path", variant.label, size.label, args.warmup, args.runs)
        paths = {DIFFUSERS: bare_job(pipe, size, args.steps), SERVING: serving_job(portrait, size, args.steps)}
        try:
            timings = time_paths(paths, args.runs, args.warmup, probe, args.seed)
        except Exception as exc:
            if not probe.is_oom(exc):
                raise
            timings = None  # release memory only once the exception (and its frames) are gone
        if timings is None:
            probe.release()
            logger.warning("%s at %s: out of memory", variant.label, size.label)
            report.skipped.append((variant, f"{size.label}: out of memory"))
            continue
        report.latencies += [LatencyRow(variant, size, path, timing) for path, timing in timings.items()]
    if searches_limits(variant, args):
        oom_size, steps, seed = args.oom_size, args.oom_steps, args.seed
        report.limits.append(search_limit(
            variant, f"images per job at {oom_size.label}",
            lambda n: lambda: serving_job(portrait, oom_size, steps, num_images=n)(seed),
            probe, start=1, ceiling=args.oom_max_batch, granularity=1))
        report.limits.append(search_limit(
            variant, "square side (px), 1 image",
            lambda side: lambda: serving_job(portrait, Size(side, side), steps)(seed),
            probe, start=1024, ceiling=args.oom_max_side, granularity=256))


def weight_bytes(pipe) -> int:
    """Bytes of every parameter and buffer of ``pipe``'s torch components."""
    return sum(tensor.numel() * tensor.element_size()
               for component in pipe.components.values() if hasattr(component, "parameters")
               for tensor in (*component.parameters(), *component.buffers()))


def measure_promotion(variant: Variant, portrait: PortraitPipeline, probe: Probe) -> PromotionRow:
    """A warm standby's takeover on ``portrait``'s weights: ``place`` from pageable, then from pinned host
    memory, then the worker's warm-up generation; leaves ``portrait`` placed again."""
    from webui.settings import WorkerSettings
    from webui.worker.pipelines.warmup import self_check

    pipe = portrait.model.text2img
    pageable, pinned = probe.host_copy_gbps(pinned=False), probe.host_copy_gbps(pinned=True)
    seconds = {}
    for pin in (False, True):
        probe.to_host(pipe)
        portrait.placed = False
        if pin:
            portrait.pin_host_memory()
        probe.sync()
        started = time.perf_counter()
        portrait.place()
        probe.sync()
        seconds[pin] = time.perf_counter() - started
        logger.info("place from %s host memory: %.2f s", "pinned" if pin else "pageable", seconds[pin])
    started = time.perf_counter()
    self_check(portrait, WorkerSettings.model_fields["warmup_steps"].default)
    probe.sync()
    return PromotionRow(variant, weight_bytes(pipe), pageable, pinned, seconds[False], seconds[True],
                        time.perf_counter() - started)


def build_variant(variant: Variant, probe: Probe) -> tuple[PortraitPipeline, BuildRow]:
    """The twin on CUDA in ``variant``'s dtype, served with the worker's plan for it; raises ``DeviceError``."""
    from assets.twin_model import build_twin
    from webui.settings import WorkerSettings
    from webui.worker.pipelines.device import plan_device, probe_machine
    from webui.worker.pipelines.diffusers import PortraitPipeline

    settings = WorkerSettings(device="cuda", dtype=variant.dtype, attention=variant.attention,
                              compile="on" if variant.compile else "off", cpu_offload="off", vae_tiling="auto")
    plan = plan_device(settings, probe_machine())
    probe.release()
    started = time.perf_counter()
    portrait = PortraitPipeline.from_pipeline(build_twin("cuda", plan.dtype), plan, model_name="z-image-turbo twin")
    probe.sync()
    return portrait, BuildRow(variant, time.perf_counter() - started, probe.allocated_bytes())


def parameter_counts(portrait: PortraitPipeline) -> dict[str, int]:
    pipe = portrait.model.text2img
    return {name.replace("_", " "): sum(p.numel() for p in getattr(pipe, name).parameters())
            for name in ("transformer", "text_encoder", "vae")}


def run(args: argparse.Namespace, probe: Probe, report: Report,
        build: Callable[[Variant, Probe], tuple[PortraitPipeline, BuildRow]] = build_variant,
        on_progress: Callable[[Report], None] = lambda report: None) -> Report:
    """Build, measure and free each variant in turn; ``on_progress`` after each one."""
    from webui.worker.pipelines.device import DeviceError

    for variant in variants(args):
        try:
            portrait, build_row = build(variant, probe)
        except DeviceError as exc:
            logger.warning("skipping %s: %s", variant.label, exc)
            report.skipped.append((variant, str(exc)))
            continue
        report.builds.append(build_row)
        report.parameters = report.parameters or parameter_counts(portrait)
        try:
            measure_variant(report, variant, portrait, args, probe)
            if args.promotion and not variant.compile and not report.promotions:
                on_progress(report)  # what was measured is kept whatever the takeover measurement does
                try:
                    report.promotions.append(measure_promotion(variant, portrait, probe))
                except Exception as exc:  # noqa: BLE001 - reported as a skipped measurement, the run goes on
                    logger.exception("standby takeover measurement failed")
                    report.skipped.append((variant, f"standby takeover: {type(exc).__name__}: {exc}"[:200]))
        finally:
            del portrait
            _reset_compiler(variant)
            probe.release()
        on_progress(report)
    return report


def _reset_compiler(variant: Variant) -> None:
    if variant.compile:
        import torch

        torch.compiler.reset()
