"""The session's Markdown: the device, the chooser's reasons, the configurations, the gate, the restarts."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from bench.gpu_session.configs import Measured
from bench.gpu_session.restart import Start
from bench.report import fmt_ms, markdown_table
from webui.worker.pipelines.configuration import Configuration
from webui.worker.pipelines.quality import QualityGate, Selection


@dataclass
class SessionReport:
    """Everything one session measured."""

    device: str
    versions: str
    size: str
    steps: int
    runs: int
    warmup: int
    chosen: Configuration
    gate: QualityGate
    measured: list[Measured] = field(default_factory=list)
    selection: Selection | None = None
    starts: list[Start] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    """What could not be measured: (what, why)."""
    reproduce: str = ""

    def markdown(self) -> str:
        parts = [f"# GPU session: configurations, image difference, restart-to-ready\n\n"
                 f"Device: **{self.device}**; {self.versions}. {self.size}, {self.steps} steps, "
                 f"{self.warmup} warm-up + {self.runs} timed runs per configuration (serving path).\n",
                 "## What the worker's chooser picks here (with `--fp8 auto`)\n",
                 markdown_table(["choice", "value", "reason"],
                                [[name, str(item["value"]), item["reason"]]
                                 for name, item in self.chosen.as_dict().items()]) + "\n"]
        if self.measured:
            parts += [self.latency_section()]
        if self.starts:
            parts += [self.restart_section()]
        if self.skipped:
            parts += ["## Not measured\n", markdown_table(["what", "why"], self.skipped) + "\n"]
        parts.append(f"Reproduce: `{self.reproduce}`\n")
        return "\n".join(parts)

    def latency_section(self) -> str:
        reference = self.measured[0].stats.median_ms
        rows = []
        for item in self.measured:
            verdict = item.verdict
            psnr = "reference" if verdict is None else (
                "identical" if math.isinf(verdict.worst.psnr_db) else f"{verdict.worst.psnr_db:.1f}")
            rows.append([item.configuration.label, fmt_ms(item.stats.median_ms), fmt_ms(item.stats.p95_ms),
                         f"{item.first_call_s:.1f}" if item.first_call_s is not None else "–",
                         f"{reference / item.stats.median_ms:.2f}×", psnr,
                         "–" if verdict is None else f"{verdict.worst.mean_abs:.2f}",
                         "–" if verdict is None else ("pass" if verdict.passed else "**refused**")])
        chosen = self.selection.chosen.label if self.selection else "–"
        return ("## Latency and image difference per configuration (against eager bfloat16)\n\n"
                + markdown_table(["configuration", "p50 ms", "p95 ms", "first call s", "speed-up", "worst PSNR dB",
                                  "worst mean abs Δ", "gate"], rows)
                + f"\n\nQuality gate: PSNR >= {self.gate.min_psnr_db:g} dB and mean |Δ| <= "
                f"{self.gate.max_mean_abs:g}/255 on every fixed seed. Kept, fastest first: **{chosen}**.\n")

    def restart_section(self) -> str:
        rows = [[("first start (empty cache)" if index == 0 else f"restart {index} (warm cache)"),
                 f"{start.build_s:.2f}", f"{start.place_s:.2f}", f"{start.warmup_s:.2f}", f"{start.ready_s:.2f}",
                 f"{start.first_job_s:.2f}", f"{start.second_job_s:.2f}", f"{start.process_s:.1f}",
                 f"{start.fxgraph_hits} / {start.fxgraph_misses}"] for index, start in enumerate(self.starts)]
        return ("## Restart-to-ready with the compile cache\n\n"
                + markdown_table(["start", "build s", "place s", "warm-up s", "ready s", "first job s",
                                  "second job s", "process s", "FX graph hit / miss"], rows)
                + "\n\n*ready* = build (the twin's weights, standing in for the weights copy) + place + the worker's "
                "warm-up; the goal is a restart ready within the weights copy + 2 s.\n")
