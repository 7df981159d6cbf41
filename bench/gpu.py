"""GPU benchmark of real-size Z-Image-Turbo jobs, on the architecture twin (random weights, no download).

    python -m bench.gpu                                   # the full matrix below, on CUDA device 0
    python -m bench.gpu --runs 20 --dtypes bfloat16 --attention sdpa --compile off --no-oom

For every variant (``--dtypes`` x ``--attention`` x ``--compile``) it builds the twin
(``assets.twin_model``: the real transformer, Qwen3-4B text encoder and 16-channel VAE with
random weights created on the GPU), wraps it as the worker does
(``PortraitPipeline.from_pipeline`` applies the worker's device plan: dtype, attention backend,
``torch.compile`` of the transformer) and times one job per ``--sizes`` entry along two paths on
that same object, interleaved run by run:

* *diffusers*: the bare loop, ``ZImagePipeline.__call__`` as Z-Image-Turbo's model card calls it;
* *serving*: ``PortraitPipeline.generate``, what a worker runs for a job (per-step callback,
  per-image generators, VAE tiling decision). Goal: within 5 % of *diffusers*.

It reports p50/p95 after ``--warmup`` runs per path (the first call, which includes
``torch.compile``, separately), ``torch.cuda.max_memory_allocated`` (weights included), and for
eager variants of the first ``--attention`` entry the largest batch (at ``--oom-size``) and the
largest square side (one image) that run before CUDA runs out of memory: doubling until a
failure, then bisecting, over ``--oom-steps`` denoising steps (peak memory does not grow with
steps). Results: a Markdown table on stdout and in ``bench/results/gpu.md`` (rewritten after
every variant, so an interrupted run keeps what it measured).

Without CUDA it refuses with one line and exit code 2.
"""

from __future__ import annotations

import argparse
import gc
import logging
import shlex
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from bench.report import RESULTS_DIR, LatencyStats, fmt_ms, machine_summary, markdown_table, write_results

if TYPE_CHECKING:
    from webui.worker.pipelines.diffusers import PortraitPipeline

logger = logging.getLogger("bench.gpu")

PROG = "python -m bench.gpu"
EXIT_NO_CUDA = 2
REFUSAL = (f"{PROG}: no CUDA GPU (torch.cuda.is_available() is False); it builds a 10-billion-parameter "
           "Z-Image-Turbo twin on the GPU and measures GPU time, so it only runs on a CUDA machine")
PROMPT = "studio portrait of a woman with short dark hair, soft window light, 85mm"
SERVING_GOAL = 0.05
"""The serving path's p50 may exceed the bare diffusers loop's by this fraction."""
DIFFUSERS, SERVING = "diffusers", "serving"
GIB = 1024**3


@dataclass(frozen=True, order=True)
class Size:
    """An image size in pixels (``WIDTHxHEIGHT`` on the command line)."""

    width: int
    height: int

    @property
    def label(self) -> str:
        return f"{self.width}×{self.height}"

    @classmethod
    def parse(cls, text: str) -> Size:
        """``768x1024`` (width x height) or ``1024`` (square); sides must be multiples of 16 (Z-Image)."""
        parts = text.lower().replace("×", "x").split("x")
        try:
            width, height = (int(parts[0]), int(parts[-1])) if len(parts) in (1, 2) else (0, 0)
        except ValueError:
            width = height = 0
        if width <= 0 or height <= 0 or width % 16 or height % 16:
            raise argparse.ArgumentTypeError(f"{text!r} is not WIDTHxHEIGHT with positive multiples of 16")
        return cls(width, height)


@dataclass(frozen=True)
class Variant:
    """How the twin runs: weight dtype, attention backend, ``torch.compile`` of the transformer."""

    dtype: str
    attention: str
    compile: bool

    @property
    def cells(self) -> list[str]:
        return [self.dtype, self.attention, "on" if self.compile else "off"]

    @property
    def label(self) -> str:
        return "/".join(self.cells[:2] + ["compiled" if self.compile else "eager"])


@dataclass(frozen=True)
class PathTiming:
    """One path's timings at one size."""

    stats: LatencyStats
    peak_bytes: int
    first_call_s: float | None


@dataclass(frozen=True)
class LatencyRow:
    variant: Variant
    size: Size
    path: str
    timing: PathTiming


@dataclass(frozen=True)
class BuildRow:
    variant: Variant
    build_s: float
    weights_bytes: int


@dataclass(frozen=True)
class PromotionRow:
    """A warm standby's takeover with real-size weights: host memory -> GPU, then the worker's warm-up."""

    variant: Variant
    weights_bytes: int
    pageable_gbps: float
    """Host -> GPU copy rate of one large pageable tensor (GB/s): the floor for weights in ordinary memory."""
    pinned_gbps: float
    """The same from page-locked memory."""
    place_pageable_s: float
    """``PortraitPipeline.place`` from ordinary host memory."""
    place_pinned_s: float
    """``PortraitPipeline.place`` after ``pin_host_memory`` (what the standby does while it waits)."""
    warmup_s: float
    """The worker's warm-up generation right after (``webui.worker.pipelines.warmup.self_check``)."""

    @property
    def copy_floor_s(self) -> float:
        """The weights' bytes at the pageable copy rate: 'the host-RAM -> GPU weight copy' of the goal."""
        return self.weights_bytes / (self.pageable_gbps * 1e9)

    @property
    def takeover_s(self) -> float:
        """What the standby spends after the go before it is ready: pinned place + warm-up."""
        return self.place_pinned_s + self.warmup_s


@dataclass(frozen=True)
class Outcome:
    """One try of the memory-limit search: its peak memory, or why it failed."""

    peak_bytes: int | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class LimitRow:
    """The result of one memory-limit search."""

    variant: Variant
    search: str
    largest_ok: int | None
    peak_bytes: int | None
    first_failure: int | None
    failure: str | None
    ceiling: int


@dataclass
class Report:
    """Everything measured, and how it renders."""

    gpu: str
    versions: str
    steps: int
    runs: int
    warmup: int
    oom_steps: int
    parameters: Mapping[str, int] = field(default_factory=dict)
    builds: list[BuildRow] = field(default_factory=list)
    latencies: list[LatencyRow] = field(default_factory=list)
    limits: list[LimitRow] = field(default_factory=list)
    skipped: list[tuple[Variant, str]] = field(default_factory=list)
    promotions: list[PromotionRow] = field(default_factory=list)
    machine: str = ""
    reproduce: str = PROG

    def overheads(self) -> list[tuple[Variant, Size, float]]:
        """Serving p50 / diffusers p50 - 1 for every variant and size measured along both paths."""
        by_key = {(row.variant, row.size, row.path): row.timing.stats.median_ms for row in self.latencies}
        return [(variant, size, by_key[variant, size, SERVING] / by_key[variant, size, DIFFUSERS] - 1)
                for (variant, size, path) in by_key
                if path == SERVING and by_key.get((variant, size, DIFFUSERS), 0) > 0]

    def goal_line(self) -> str:
        """Whether the serving path stayed within ``SERVING_GOAL`` of bare diffusers."""
        overheads = self.overheads()
        if not overheads:
            return "Serving path vs bare diffusers: nothing measured yet."
        variant, size, worst = max(overheads, key=lambda item: item[2])
        verdict = "met" if worst <= SERVING_GOAL else "NOT met"
        return (f"Goal (serving p50 within {SERVING_GOAL:.0%} of bare diffusers): **{verdict}**; worst "
                f"{fmt_pct(worst)} ({variant.label}, {size.label}) over {len(overheads)} comparisons.")

    def markdown(self) -> str:
        """The whole report as Markdown."""
        gpu = [self.gpu, self.versions]
        params = ", ".join(f"{name} {fmt_count(value)}" for name, value in self.parameters.items())
        parts = [
            "# GPU benchmark: Z-Image-Turbo architecture twin",
            "",
            f"The real Z-Image-Turbo architecture with random weights (`assets/twin_model.py`"
            f"{': ' + params if params else ''} parameters), no LoRA. {self.steps} steps, guidance 0, one image "
            f"per job; p50/p95 over {self.runs} runs per path after {self.warmup} warm-up runs, the two paths "
            "interleaved on the same twin. *diffusers*: `ZImagePipeline.__call__` directly; *serving*: "
            "`PortraitPipeline.generate`, the worker's path. Peak: `torch.cuda.max_memory_allocated` during the "
            "run, weights included. First call: the first warm-up run (includes `torch.compile`).",
            "",
            f"{self.machine}" if self.machine else "",
            "",
            "## Build",
            "",
            markdown_table(
                ["GPU", "torch / diffusers", "dtype", "attention", "compile", "build s", "weights GiB"],
                [[*gpu, *row.variant.cells, f"{row.build_s:.1f}", fmt_gib(row.weights_bytes)] for row in self.builds],
            ),
            "",
            "## Latency and peak memory",
            "",
            markdown_table(
                ["GPU", "torch / diffusers", "dtype", "attention", "compile", "size", "path", "runs", "p50 ms",
                 "p95 ms", "first call s", "peak GiB", "vs diffusers"],
                [self._latency_cells(gpu, row) for row in self.latencies],
            ),
            "",
            self.goal_line(),
        ]
        if self.limits:
            parts += [
                "",
                f"## Memory limits (serving path, {self.oom_steps} steps, VAE tiled above 1024² as the worker does)",
                "",
                markdown_table(
                    ["GPU", "torch / diffusers", "dtype", "attention", "search", "largest that ran",
                     "peak GiB there", "first failure", "searched up to"],
                    [[*gpu, *row.variant.cells[:2], row.search, fmt_opt(row.largest_ok), fmt_gib(row.peak_bytes),
                      f"{row.first_failure} ({row.failure})" if row.first_failure is not None else "none",
                      str(row.ceiling)] for row in self.limits],
                ),
            ]
        if self.promotions:
            parts += ["", "## Warm standby takeover with real-size weights", "",
                      "The served twin is moved back to host memory, then `PortraitPipeline.place` (what a warm "
                      "standby runs at the go) times the copy to the GPU, from ordinary and from page-locked "
                      "memory (`pin_host_memory`, done by the standby while it waits), followed by the worker's "
                      "warm-up generation. Copy floor: the weights' bytes at the rate of one large pageable "
                      "tensor copy. The issue's goal is back to full capacity within copy + 2 s; the detection "
                      "and port takeover around this are measured by `bench.failover --standby` (demo model).",
                      "",
                      markdown_table(
                          ["GPU", "torch / diffusers", "dtype", "weights GiB", "pageable GB/s", "pinned GB/s",
                           "copy floor s", "place (pageable) s", "place (pinned) s", "warm-up s",
                           "takeover s", "takeover - floor s"],
                          [[*gpu, row.variant.dtype, fmt_gib(row.weights_bytes), f"{row.pageable_gbps:.1f}",
                            f"{row.pinned_gbps:.1f}", f"{row.copy_floor_s:.2f}", f"{row.place_pageable_s:.2f}",
                            f"{row.place_pinned_s:.2f}", f"{row.warmup_s:.2f}", f"{row.takeover_s:.2f}",
                            f"{row.takeover_s - row.copy_floor_s:+.2f}"] for row in self.promotions],
                      )]
        if self.skipped:
            parts += ["", "## Skipped", "", *(f"- {variant.label}: {why}" for variant, why in self.skipped)]
        parts += ["", f"Reproduce: `{self.reproduce}`"]
        return "\n".join(parts)

    def _latency_cells(self, gpu: list[str], row: LatencyRow) -> list[str]:
        stats = row.timing.stats
        overhead = "–"
        if row.path == SERVING:
            overhead = next((fmt_pct(value) for variant, size, value in self.overheads()
                             if (variant, size) == (row.variant, row.size)), "–")
        first = "–" if row.timing.first_call_s is None else f"{row.timing.first_call_s:.1f}"
        return [*gpu, *row.variant.cells, row.size.label, row.path, str(stats.count), fmt_ms(stats.median_ms),
                fmt_ms(stats.p95_ms), first, fmt_gib(row.timing.peak_bytes), overhead]


def fmt_pct(value: float) -> str:
    """``0.0123`` -> ``"+1.2 %"``."""
    return f"{value * 100:+.1f} %"


def fmt_gib(value: int | None) -> str:
    """Bytes as GiB with one decimal; ``None`` -> ``"–"``."""
    return "–" if value is None else f"{value / GIB:.1f}"


def fmt_opt(value: int | None) -> str:
    return "–" if value is None else str(value)


def fmt_count(value: int) -> str:
    """``6154908736`` -> ``"6.15 B"``, ``83819683`` -> ``"83.8 M"``."""
    return f"{value / 1e9:.2f} B" if value >= 1e9 else f"{value / 1e6:.1f} M"


# Measuring ------------------------------------------------------------------------------------------------------


class Probe(Protocol):
    """What the measurements need from the device (CUDA here, a fake in the tests)."""

    def sync(self) -> None: ...

    def reset_peak(self) -> None: ...

    def peak_bytes(self) -> int: ...

    def allocated_bytes(self) -> int: ...

    def release(self) -> None: ...

    def is_oom(self, exc: BaseException) -> bool: ...

    def host_copy_gbps(self, pinned: bool) -> float: ...

    def to_host(self, pipe) -> None: ...


class CudaProbe:
    """``Probe`` over ``torch.cuda`` (device 0)."""

    OOM_MARKERS = ("out of memory", "CUBLAS_STATUS_ALLOC_FAILED", "CUDNN_STATUS_NOT_ENOUGH_WORKSPACE")

    def __init__(self) -> None:
        import torch

        self.cuda = torch.cuda

    def sync(self) -> None:
        self.cuda.synchronize()

    def reset_peak(self) -> None:
        self.cuda.reset_peak_memory_stats()

    def peak_bytes(self) -> int:
        return self.cuda.max_memory_allocated()

    def allocated_bytes(self) -> int:
        return self.cuda.memory_allocated()

    def release(self) -> None:
        gc.collect()
        self.cuda.empty_cache()

    def is_oom(self, exc: BaseException) -> bool:
        return isinstance(exc, self.cuda.OutOfMemoryError) or (
            isinstance(exc, RuntimeError) and any(marker in str(exc) for marker in self.OOM_MARKERS))

    def host_copy_gbps(self, pinned: bool, size_bytes: int = 2 * GIB, tries: int = 3) -> float:
        """The best of ``tries`` copies of one ``size_bytes`` host tensor (pageable or pinned) to the GPU, in GB/s."""
        import torch

        source = torch.ones(size_bytes, dtype=torch.uint8, pin_memory=pinned)
        target = torch.empty(size_bytes, dtype=torch.uint8, device="cuda")
        best = float("inf")
        for _ in range(tries):
            self.sync()
            started = time.perf_counter()
            target.copy_(source)
            self.sync()
            best = min(best, time.perf_counter() - started)
        del source, target
        self.release()
        return size_bytes / best / 1e9

    def to_host(self, pipe) -> None:
        """Move ``pipe``'s weights back to ordinary host memory (as a standby holds them before pinning)."""
        pipe.to("cpu")
        self.release()


Job = Callable[[int], object]
"""One generation; its argument is the seed."""
Limit = tuple[int | None, int | None]
"""The largest value that ran and the smallest that failed (``None``: not found)."""


def bare_job(pipe, size: Size, steps: int, num_images: int = 1) -> Job:
    """The bare diffusers loop: ``ZImagePipeline.__call__`` as Z-Image-Turbo's model card calls it."""
    import torch

    def run(seed: int) -> object:
        with torch.inference_mode():
            return pipe(prompt=PROMPT, height=size.height, width=size.width, num_inference_steps=steps,
                        guidance_scale=0.0, num_images_per_prompt=num_images,
                        generator=torch.Generator("cpu").manual_seed(seed)).images

    return run


def serving_job(portrait: PortraitPipeline, size: Size, steps: int, num_images: int = 1) -> Job:
    """The worker's path: ``PortraitPipeline.generate`` with a per-step callback, as the worker streams progress."""
    from webui.schema import EffectiveParams

    def run(seed: int) -> object:
        params = EffectiveParams(prompt=PROMPT, negative_prompt="", steps=steps, guidance=0.0, width=size.width,
                                 height=size.height, seed=seed, lora_scale=1.0, num_images=num_images,
                                 mode="text2img")
        return portrait.generate(params, on_step=lambda step, total: None)

    return run


def time_paths(paths: Mapping[str, Job], runs: int, warmup: int, probe: Probe, seed: int = 0) -> dict[str, PathTiming]:
    """Warm every path up, then run them interleaved ``runs`` times (order alternating), the same seeds on each.

    Each timed run is bracketed by device synchronisation; its peak memory is tracked per path.
    """
    first: dict[str, float] = {}
    for name, job in paths.items():
        for index in range(warmup):
            elapsed = _timed(job, seed + index, probe)
            first.setdefault(name, elapsed)
            logger.info("warm-up %s %d/%d: %.2fs", name, index + 1, warmup, elapsed)
    samples: dict[str, list[float]] = {name: [] for name in paths}
    peaks = dict.fromkeys(paths, 0)
    names = list(paths)
    for index in range(runs):
        for name in names if index % 2 == 0 else names[::-1]:
            probe.reset_peak()
            samples[name].append(_timed(paths[name], seed + index, probe))
            peaks[name] = max(peaks[name], probe.peak_bytes())
    return {name: PathTiming(LatencyStats.from_seconds(samples[name]), peaks[name], first.get(name))
            for name in paths}


def _timed(job: Job, seed: int, probe: Probe) -> float:
    probe.sync()
    started = time.perf_counter()
    job(seed)
    probe.sync()
    return time.perf_counter() - started


def find_limit(fits: Callable[[int], bool], start: int, ceiling: int, granularity: int) -> Limit:
    """The largest value that fits and the smallest that does not, as far as the search went.

    Doubles from ``start`` while ``fits`` (trying ``ceiling`` itself last), then bisects between
    the last success and the first failure in steps of ``granularity``. ``(None, start)`` when
    even ``start`` fails; ``(largest, None)`` when nothing up to ``ceiling`` failed.
    """
    ok: int | None = None
    value = min(start, ceiling)
    while fits(value):
        ok = value
        if value >= ceiling:
            return ok, None
        value = min(value * 2, ceiling)
    bad = value
    if ok is None:
        return None, bad
    while bad - ok > granularity:
        middle = ok + max(granularity, (bad - ok) // 2 // granularity * granularity)
        if fits(middle):
            ok = middle
        else:
            bad = middle
    return ok, bad


def try_once(job: Callable[[], object], probe: Probe) -> Outcome:
    """Run ``job`` once from a clean allocator; its peak memory, or the failure (OOM or other) in one line."""
    probe.release()
    probe.reset_peak()
    error = None
    try:
        job()
        probe.sync()
    except Exception as exc:  # any failure ends the search; OOM is the expected one
        error = "OOM" if probe.is_oom(exc) else f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
    if error is not None:
        probe.release()
        return Outcome(error=error)
    return Outcome(peak_bytes=probe.peak_bytes())


def search_limit(variant: Variant, search: str, job_for: Callable[[int], Callable[[], object]], probe: Probe,
                 start: int, ceiling: int, granularity: int) -> LimitRow:
    """``find_limit`` over real tries of ``job_for(value)``; the row names the peak at the largest that ran."""
    outcomes: dict[int, Outcome] = {}

    def fits(value: int) -> bool:
        outcomes[value] = outcome = try_once(job_for(value), probe)
        logger.info("%s %s = %d: %s", variant.label, search, value,
                    f"peak {fmt_gib(outcome.peak_bytes)} GiB" if outcome.ok else outcome.error)
        return outcome.ok

    largest, failed = find_limit(fits, start, ceiling, granularity)
    return LimitRow(variant, search, largest, outcomes[largest].peak_bytes if largest is not None else None,
                    failed, outcomes[failed].error if failed is not None else None, ceiling)


# The run ---------------------------------------------------------------------------------------------------------


def comma_list(choices: Sequence[str]) -> Callable[[str], list[str]]:
    """An argparse type: a comma-separated list of ``choices``."""

    def parse(text: str) -> list[str]:
        items = [item.strip() for item in text.split(",") if item.strip()]
        wrong = [item for item in items if item not in choices]
        if not items or wrong:
            raise argparse.ArgumentTypeError(f"{text!r}: give a comma-separated list of {', '.join(choices)}")
        return list(dict.fromkeys(items))

    return parse


def size_list(text: str) -> list[Size]:
    """An argparse type: comma-separated sizes (``768x1024,1024x1024``)."""
    sizes = [Size.parse(item.strip()) for item in text.split(",") if item.strip()]
    if not sizes:
        raise argparse.ArgumentTypeError("give at least one size, e.g. 768x1024")
    return sizes


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--runs", type=int, default=10, help="Timed runs per path, variant and size.")
    parser.add_argument("--warmup", type=int, default=2, help="Untimed runs per path first (compile happens here).")
    parser.add_argument("--steps", type=int, default=8, help="Denoising steps per job.")
    parser.add_argument("--sizes", type=size_list, default="768x1024,1024x1024",
                        metavar="WxH,...", help="Image sizes (width x height).")
    parser.add_argument("--dtypes", type=comma_list(["bfloat16", "float16", "float32"]),
                        default="bfloat16,float16", help="Weight dtypes.")
    parser.add_argument("--attention", type=comma_list(["sdpa", "xformers"]), default="sdpa,xformers",
                        help="Attention backends (xformers is skipped when not installed).")
    parser.add_argument("--compile", type=comma_list(["off", "on"]), default="off,on",
                        help="torch.compile of the transformer.")
    parser.add_argument("--oom", action=argparse.BooleanOptionalAction, default=True,
                        help="Search the largest batch and side (eager variants of the first --attention).")
    parser.add_argument("--oom-size", type=Size.parse, default="1024x1024", metavar="WxH",
                        help="Image size of the batch search.")
    parser.add_argument("--oom-steps", type=int, default=2, help="Denoising steps per try of the limit search.")
    parser.add_argument("--oom-max-batch", type=int, default=64, help="Largest batch tried.")
    parser.add_argument("--oom-max-side", type=int, default=8192,
                        help="Largest square side tried (8192 is the limit of Z-Image's RoPE tables).")
    parser.add_argument("--promotion", action=argparse.BooleanOptionalAction, default=True,
                        help="Time a warm standby's takeover (host memory -> GPU, warm-up) on the first eager variant.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the first run (run i uses seed + i).")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help="Where gpu.md is written.")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse ``argv`` (default: the command line); ``args.reproduce`` is the command that reruns it."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    for name in ("runs", "steps", "oom_steps", "oom_max_batch"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.warmup < 0:
        parser.error("--warmup must not be negative")
    if args.oom_max_side < 16 or args.oom_max_side % 16:
        parser.error("--oom-max-side must be a positive multiple of 16")
    args.reproduce = " ".join([PROG, *(shlex.quote(arg) for arg in argv)])
    return args


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


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; returns the exit code (2 without CUDA)."""
    args = parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print(REFUSAL, file=sys.stderr)
        return EXIT_NO_CUDA
    import diffusers

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    report = Report(gpu=torch.cuda.get_device_name(0), versions=f"{torch.__version__} / {diffusers.__version__}",
                    steps=args.steps, runs=args.runs, warmup=args.warmup, oom_steps=args.oom_steps,
                    reproduce=args.reproduce)

    def save(report: Report) -> None:
        report.machine = f"{machine_summary()}, diffusers {diffusers.__version__}."
        write_results("gpu", report.markdown(), None, args.results_dir)

    save(run(args, CudaProbe(), report, on_progress=save))
    print(report.markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
