"""The serving benchmark's default report: latency per path (a)-(d) and 1 vs 2 workers' requests/s."""

from __future__ import annotations

import argparse

from bench.report import (
    LatencyStats,
    fmt_ms,
    machine_summary,
    markdown_table,
    new_figure,
)
from bench.serving.measure import Throughput

PATH_NAMES = {
    "a": "(a) in-process pipeline",
    "b": "(b) worker REST",
    "c": "(c) HAProxy REST",
    "d": "(d) gradio_client via HAProxy",
}


def render(args: argparse.Namespace, latencies: dict[str, list[float]], throughput: list[Throughput]) -> str:
    """The Markdown report."""
    stats = {key: LatencyStats.from_seconds(values) for key, values in latencies.items()}
    floor = stats["a"].median_ms
    latency_rows = [
        [PATH_NAMES[key], s.count, fmt_ms(s.median_ms), fmt_ms(s.p95_ms), f"{s.median_ms / floor:.2f}×",
         f"{s.median_ms - floor:+.0f}"]
        for key, s in stats.items()
    ]
    base = throughput[0].per_second
    throughput_rows = [
        [t.workers, t.clients, t.phases, t.ok, t.failed, f"{t.seconds:.0f}", f"{t.per_second:.2f}",
         f"{t.per_second / base:.2f}×" if base else "–"]
        for t in throughput
    ]
    return "\n".join([
        "# Serving benchmark",
        "",
        f"Model `{args.model}`, {args.size}×{args.size}, {args.steps} steps, guidance {args.guidance:g}, "
        f"{args.threads or 'default'} torch thread(s) per worker, {args.nodes} nodes. {machine_summary()}.",
        "",
        f"## Latency of one generation ({args.runs} interleaved runs per path, same seeds; "
        "every path returned pixel-identical images)",
        "",
        markdown_table(["path", "runs", "median ms", "p95 ms", "× in-process", "added ms"], latency_rows),
        "",
        f"## Throughput through HAProxy ({args.concurrency} concurrent REST clients; {args.rounds} rounds of a "
        f"{args.seconds:g} s phase with 1 worker, then with 2)",
        "",
        markdown_table(["workers", "clients", "phases", "completed", "failed", "seconds", "req/s", "× 1 worker"],
                       throughput_rows),
        "",
        f"Reproduce: `{args.reproduce}`",
    ])


def plot(latencies: dict[str, list[float]], throughput: list[Throughput]):
    """Latency per path (box plot) and requests/s per worker count (bars)."""
    figure, axes = new_figure(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [3, 1]})
    left, right = axes[0]
    keys = list(latencies)
    left.boxplot([[v * 1000 for v in latencies[k]] for k in keys], orientation="horizontal", showfliers=True)
    left.set_yticks(range(1, len(keys) + 1), [PATH_NAMES[k] for k in keys])
    left.invert_yaxis()
    left.set_xlabel("latency of one generation (ms)")
    left.set_title("Where the time goes")
    left.grid(axis="x", alpha=0.3)
    bars = right.bar([f"{t.workers} worker{'s' * (t.workers > 1)}" for t in throughput],
                     [t.per_second for t in throughput], color=["#c9a227", "#7a5c00"][: len(throughput)])
    right.bar_label(bars, fmt="%.2f")
    right.set_ylabel("requests / s")
    right.set_title("Throughput via HAProxy")
    figure.tight_layout()
    return figure
