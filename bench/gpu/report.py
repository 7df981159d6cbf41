"""The GPU benchmark's report: everything measured, rendered as Markdown tables."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from bench.gpu.rows import (
    DIFFUSERS,
    GIB,
    PROG,
    SERVING,
    SERVING_GOAL,
    BuildRow,
    LatencyRow,
    LimitRow,
    PromotionRow,
    Size,
    Variant,
)
from bench.report import fmt_ms, markdown_table


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
