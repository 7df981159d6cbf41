"""Bounded soak (opt-in: ``pytest -m soak``): minutes of mixed traffic with random worker kills.

Runs ``bench.soak`` against its own cluster (defaults: 3 minutes, 2 worker SIGKILLs, 2
browser-protocol tabs + 1 reused gradio_client + 2 REST clients, 15 % malformed requests)
and fails on any lost good request, any malformed request that was not refused with a
readable message, a node part not UP at the end, or a process whose RSS grew more than the
bound after warm-up (see ``bench/soak/``). ``PORTRAIT_SOAK_SECONDS`` and
``PORTRAIT_SOAK_KILLS`` change the length and the number of kills.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench.harness.processes import REPO, Processes
from bench.soak.cli import parse_args, run_soak
from bench.soak.report import render

pytestmark = pytest.mark.soak


@pytest.mark.timeout(1200)
def test_soak_loses_nothing_and_leaks_nothing(demo_model_dir: Path, processes: Processes, tmp_path: Path) -> None:
    args = parse_args([
        "--seconds", os.environ.get("PORTRAIT_SOAK_SECONDS", "180"),
        "--kills", os.environ.get("PORTRAIT_SOAK_KILLS", "2"),
    ])
    report = run_soak(args, processes=processes, run_dir=tmp_path)
    markdown = render(report)
    artifacts = REPO / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    (artifacts / "soak.md").write_text(markdown, encoding="utf-8")
    print(markdown)

    assert report.problems() == []
    assert len(report.kills) == args.kills
    assert sum(1 for r in report.records if r.good) > 0 and sum(1 for r in report.records if not r.good) > 0
