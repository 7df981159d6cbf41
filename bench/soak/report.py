"""What a soak found (``SoakReport``: pass or the problems), as Markdown and as a plot."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any

from bench.harness.load import OK, REJECTED, Record
from bench.report import LatencyStats, fmt_ms, machine_summary, markdown_table, new_figure
from bench.soak.kills import Kill
from bench.soak.memory import MB, RssSample, RssVerdict


@dataclass
class SoakReport:
    """Everything a soak run found; ``problems()`` is empty when it passed."""

    options: argparse.Namespace
    records: list[Record]
    kills: list[Kill]
    rss: list[RssVerdict]
    rss_samples: list[RssSample]
    all_up_at_end: bool
    restarts: dict[str, Any]
    duration: float
    errors: list[str] = field(default_factory=list)

    @property
    def lost(self) -> list[Record]:
        """Good requests that got no image."""
        return [r for r in self.records if r.lost]

    @property
    def badly_refused(self) -> list[Record]:
        """Malformed requests that were accepted or refused without a readable message."""
        return [r for r in self.records if not r.good and r.outcome != REJECTED]

    def problems(self) -> list[str]:
        """Why the soak failed (empty list: it passed)."""
        problems = list(self.errors)
        problems += [f"lost good request: {r.client} at {r.start:.1f}s: {r.detail}" for r in self.lost]
        problems += [f"malformed request not refused readably: {r.client}: {r.detail}" for r in self.badly_refused]
        if not self.all_up_at_end:
            problems.append("not every node part was UP in HAProxy at the end")
        if len(self.kills) < self.options.kills:
            problems.append(f"only {len(self.kills)} of {self.options.kills} worker kills happened")
        problems += [
            f"{v.role} (pid {v.pid}) grew {v.growth_mb:.0f} MB ({v.growth_pct:.1f} %) over {v.span_s:.0f} s"
            for v in self.rss if v.within_bound is False
        ]
        if not any(v.within_bound is not None for v in self.rss):
            problems.append("no process lived long enough after warm-up to judge its memory")
        return problems


def render(report: SoakReport) -> str:
    """The Markdown report."""
    args, records = report.options, report.records
    good = [r for r in records if r.good]
    rows = []
    for kind in sorted({r.kind for r in records}):
        mine = [r for r in records if r.kind == kind]
        ok = [r for r in mine if r.good and r.outcome == OK]
        stats = LatencyStats.from_seconds(r.latency for r in ok)
        rows.append([kind, sum(r.good for r in mine), len(ok), sum(r.lost for r in mine),
                     sum(1 for r in mine if r.attempts > 1), sum(not r.good for r in mine),
                     sum(1 for r in mine if not r.good and r.outcome == REJECTED),
                     fmt_ms(stats.median_ms), fmt_ms(stats.p95_ms)])
    rss_rows = [
        [v.role, v.pid, f"{v.baseline_mb:.0f}", f"{v.final_mb:.0f}", f"{v.growth_mb:+.1f}", f"{v.growth_pct:+.1f}%",
         f"{v.span_s:.0f}", {True: "ok", False: "**over**", None: "too short"}[v.within_bound]]
        for v in sorted(report.rss, key=lambda v: (v.role, v.pid))
    ]
    problems = report.problems()
    lines = [
        "# Soak",
        "",
        f"Model `{args.model}`, {args.size}×{args.size}, {args.steps} steps, {args.nodes} nodes, "
        f"{report.duration:.0f} s of traffic ({args.browsers} browser tabs, 1 gradio_client, {args.rest} REST; "
        f"{args.malformed:.0%} malformed), {len(report.kills)} worker SIGKILLs. {machine_summary()}.",
        "",
        f"**{'PASSED' if not problems else 'FAILED'}**: {len(good)} good requests, {len(report.lost)} lost; "
        f"{len(records) - len(good)} malformed, {len(report.badly_refused)} not refused readably; "
        f"all node parts UP at the end: {'yes' if report.all_up_at_end else 'no'}.",
        "",
        markdown_table(["client", "good", "ok", "lost", "retried", "malformed", "refused", "median ms", "p95 ms"],
                       rows),
        "",
        "Kills: " + ("; ".join(f"{k.t:.0f}s {k.node} worker pid {k.pid}{' (mid-job)' if k.was_busy else ''}"
                               for k in report.kills) or "none"),
        "",
        f"## Memory (RSS) — bound: growth ≤ {args.rss_bound_pct:g} % of the warmed-up RSS and ≤ "
        f"{args.rss_bound_mb:g} MB; warm-up {args.warmup:g} s after a process appears, judged over ≥ "
        f"{args.judge_span:g} s",
        "",
        markdown_table(["process", "pid", "warm MB", "final MB", "growth MB", "growth", "judged s", "verdict"],
                       rss_rows),
    ]
    if problems:
        lines += ["", "Problems:", ""] + [f"- {p}" for p in problems[:30]]
    lines += ["", f"Reproduce: `{args.reproduce}`"]
    return "\n".join(lines)


def plot(report: SoakReport):
    """Request latency over time (with kills) above the RSS of every process."""
    figure, axes = new_figure(2, 1, figsize=(13, 8), sharex=True)
    top, bottom = axes[0][0], axes[1][0]
    for kind in sorted({r.kind for r in report.records}):
        ok = [r for r in report.records if r.kind == kind and r.good and r.outcome == OK]
        top.scatter([r.start for r in ok], [r.latency for r in ok], s=8, alpha=0.6, label=kind)
    refused = [r for r in report.records if not r.good]
    top.scatter([r.start for r in refused], [r.latency for r in refused], s=8, marker="+", color="grey",
                label="malformed (refused)")
    lost = report.lost
    if lost:
        top.scatter([r.start for r in lost], [r.latency for r in lost], s=50, marker="x", color="red", label="lost")
    for kill in report.kills:
        for axis in (top, bottom):
            axis.axvline(kill.t, color="red", linestyle="--", linewidth=0.8)
    top.set_ylabel("latency (s)")
    top.set_title("Soak traffic (dashed: worker SIGKILL)")
    top.legend(fontsize=8, loc="upper left")
    top.grid(alpha=0.3)
    for pid in sorted({s.pid for s in report.rss_samples}):
        mine = [s for s in report.rss_samples if s.pid == pid]
        bottom.plot([s.t for s in mine], [s.rss / MB for s in mine], label=f"{mine[0].role} ({pid})", linewidth=1.2)
    bottom.set_ylabel("RSS (MB)")
    bottom.set_xlabel("seconds since the traffic started")
    bottom.legend(fontsize=7, ncol=3, loc="upper left")
    bottom.grid(alpha=0.3)
    figure.tight_layout()
    return figure
