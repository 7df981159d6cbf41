"""The failover benchmark's report: what each failure cost the clients, as a table and a timeline plot."""

from __future__ import annotations

import argparse

from balancer.haproxy.config import PART_BACKENDS
from bench.failover.failures import Failure
from bench.failover.monitor import StateSample
from bench.harness.load import OK, Record
from bench.report import (
    LatencyStats,
    fmt_ms,
    fmt_seconds,
    machine_summary,
    markdown_table,
    new_figure,
)

STATE_COLOURS = {"UP": "#4caf50", "DOWN": "#e53935", "MAINT": "#9e9e9e"}
TRANSITION_COLOUR = "#ffb300"


def summarize(records: list[Record], failures: list[Failure]) -> list[list[object]]:
    """One table row per failure: failed good requests and latency during its recovery."""
    first = failures[0].at if failures else float("inf")
    baseline = LatencyStats.from_seconds(r.latency for r in records if r.end < first and r.outcome == OK)
    rows = []
    for failure in failures:
        end = failure.up_at if failure.up_at is not None else max((r.end for r in records), default=failure.at)
        window = [r for r in records if failure.at <= r.start <= end or r.start <= failure.at <= r.end]
        during = LatencyStats.from_seconds(r.latency for r in window if r.outcome == OK)
        lost = [r for r in records if r.lost and failure.at <= r.end <= end]  # failed while it recovered
        retried = sum(1 for r in window if r.attempts > 1)
        hit = [r.latency for r in window if r.start <= failure.at <= r.end and r.outcome == OK]
        extra = max(hit) - baseline.median_ms / 1000 if hit and baseline.count else None
        rows.append([
            failure.name, failure.note, len(window), len(lost), retried,
            fmt_seconds(failure.time_to_down), fmt_seconds(failure.time_to_up), fmt_seconds(failure.time_to_full),
            fmt_seconds(extra),
            fmt_ms(during.median_ms), fmt_ms(during.p95_ms), fmt_ms(during.max_ms),
        ])
    rows.insert(0, ["before any failure", "", sum(1 for r in records if r.end < first),
                    sum(1 for r in records if r.end < first and r.lost), 0, "–", "–", "–", "–",
                    fmt_ms(baseline.median_ms), fmt_ms(baseline.p95_ms), fmt_ms(baseline.max_ms)])
    return rows


def explain(record: Record, records: list[Record], failures: list[Failure]) -> str:
    """Say so when a failed request was streaming through a web front that was killed.

    A Gradio event stream lives on one web front and cannot be replayed by a proxy once it has
    started; what the cluster promises is that the client's *next* calls work. The request's
    front is taken to be the one that served the same client's previous call (sticky).
    """
    mine = [r for r in records if r.client == record.client]
    before = [r for r in mine if r.end <= record.start and r.web_node]
    after = [r for r in mine if r.start >= record.end]
    for failure in failures:
        killed_front = before and failure.server == f"{PART_BACKENDS['web']}/{before[-1].web_node}"
        if killed_front and record.start <= failure.at <= record.end + 1.0:
            next_ok = bool(after) and after[0].outcome == OK
            return (f" — in flight on the web front killed at {failure.at:.1f} s (its event stream died with it); "
                    f"this client's next call {'succeeded' if next_ok else 'did NOT succeed'}")
    return ""


def render(args: argparse.Namespace, records: list[Record], failures: list[Failure], duration: float,
           memory: str = "") -> str:
    """The Markdown report (``memory``: the standbys' line, with ``--standby``)."""
    lost = [r for r in records if r.lost]
    kinds = sorted({r.kind for r in records})
    per_kind = [[kind, sum(1 for r in records if r.kind == kind),
                 sum(1 for r in records if r.kind == kind and r.lost)] for kind in kinds]
    expected = [r for f in failures for r in f.expected_errors]
    lines = [
        "# Failover benchmark",
        "",
        f"Model `{args.model}`, {args.size}×{args.size}, {args.steps} steps, {args.nodes} nodes, "
        f"{args.clients} concurrent clients for {duration:.0f} s, "
        f"{'with a warm standby per worker' if args.standby else 'no standby workers'}. {machine_summary()}.",
        "",
        *([memory, ""] if memory else []),
        f"**{len(records)} requests, {len(lost)} failed** (good requests that got no image). "
        f"The OOM trigger job got: {'; '.join(r.detail[:120] for r in expected) or '–'}.",
        "",
        markdown_table(
            ["phase", "what", "requests", "failed", "retried", "to DOWN s", "back UP s", "full capacity s",
             "in-flight extra s",
             "median ms", "p95 ms", "max ms"],
            summarize(records, failures),
        ),
        "",
        "Requests are counted in a phase when they overlap the time from the failure to the server "
        "being back UP in HAProxy (for the rolling restart: from its start to its end), failed ones when they "
        "failed within that time; \"full capacity\" = every server UP again; \"retried\" = finished on "
        "another worker after a web front retry "
        "(REST jobs are replayed by HAProxy itself, invisibly). Failures at: "
        + ", ".join(f"{f.name} {f.at:.1f} s" for f in failures) + ".",
        "",
        markdown_table(["client", "requests", "failed"], per_kind),
    ]
    causes = [f"- {f.name}: the sidecar recorded `{f.cause}`" for f in failures if f.cause]
    if causes:
        lines += ["", *causes]
    if lost:
        lines += ["", "Failed requests (run clock, seconds):", ""]
        lines += [f"- {r.client}, sent {r.start:.1f} s, failed {r.end:.1f} s: {r.detail}{explain(r, records, failures)}"
                  for r in lost[:20]]
    lines += ["", f"Reproduce: `{args.reproduce}`"]
    return "\n".join(lines)


def plot(records: list[Record], failures: list[Failure], samples: list[StateSample], duration: float):
    """Latency of every request over time, above each server's HAProxy state."""
    servers = sorted({s.server for s in samples})
    figure, axes = new_figure(2, 1, figsize=(13, 7), sharex=True,
                              gridspec_kw={"height_ratios": [3, max(1, len(servers) * 0.35)]})
    top, bottom = axes[0][0], axes[1][0]
    markers = {"rest": "o", "gradio_client": "s", "browser": "^"}
    for kind in sorted({r.kind for r in records if r.good}):
        ok = [r for r in records if r.kind == kind and r.outcome == OK]
        top.scatter([r.start for r in ok], [r.latency for r in ok], s=14, marker=markers.get(kind, "o"),
                    label=kind, alpha=0.75)
    lost = [r for r in records if r.lost]
    if lost:
        top.scatter([r.start for r in lost], [r.latency for r in lost], s=60, marker="x", color="red",
                    label="failed")
    for failure in failures:
        for axis in (top, bottom):
            axis.axvline(failure.at, color="black", linestyle="--", linewidth=0.9)
        top.annotate(failure.name, (failure.at, 1.0), xycoords=("data", "axes fraction"), rotation=90,
                     va="top", ha="right", fontsize=8)
    top.set_ylabel("latency (s), by start time")
    top.set_title("Requests during failures")
    top.legend(loc="upper left", fontsize=8)
    top.grid(alpha=0.3)
    for row, server in enumerate(servers):
        changes = [s for s in samples if s.server == server]
        for current, following in zip(changes, changes[1:] + [None], strict=True):
            end = following.t if following else duration
            colour = STATE_COLOURS.get(current.status, TRANSITION_COLOUR)
            bottom.broken_barh([(current.t, end - current.t)], (row - 0.4, 0.8), color=colour)
    bottom.set_yticks(range(len(servers)), servers)
    bottom.set_xlabel("seconds since the load started")
    bottom.set_title("HAProxy state: green UP, red DOWN, grey MAINT, amber in transition", fontsize=9)
    bottom.set_xlim(0, duration)
    figure.tight_layout()
    return figure
