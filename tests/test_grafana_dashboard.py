"""The shipped Grafana dashboard (``assets/grafana/portrait-ha.json``): it loads, it is what its generator
(``assets.grafana.dashboard``, grafana-foundation-sdk) builds, every PromQL expression in it is valid (each one a
recording rule in a rules file that ``promtool check rules`` reads; a broken one is caught), it has the panels
operators asked for, and every metric it reads is in the metrics table of docs/alerts.md. tests/test_prometheus.py
runs each expression against a real Prometheus scraping a cluster. No processes but promtool."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import yaml

from assets.grafana.dashboard import OUTPUT, render
from tests.test_alert_rules import RUNBOOK, needs_promtool, promtool

GRAFANA_VARIABLES = {"$__rate_interval": "1m"}
"""The Grafana variables the expressions use, and a value Grafana could give each (it interpolates before asking)."""
SUFFIXES = ("_bucket", "_sum", "_count")
"""What a histogram's series add to the metric's name."""


def dashboard() -> dict:
    return json.loads(OUTPUT.read_text())


def expressions() -> list[str]:
    """Every panel's PromQL, as Prometheus receives it from Grafana."""
    exprs = [target["expr"] for panel in dashboard()["panels"] for target in panel.get("targets", [])]
    for variable, value in GRAFANA_VARIABLES.items():
        exprs = [expr.replace(variable, value) for expr in exprs]
    return exprs


def metric_name(series: str) -> str:
    """The metric a series name belongs to (a histogram's ``_bucket``, ``_sum`` and ``_count`` to the histogram)."""
    return next((series.removesuffix(suffix) for suffix in SUFFIXES if series.endswith(suffix)), series)


def metric_names() -> set[str]:
    """Every metric the dashboard reads (a histogram by its own name)."""
    return {metric_name(name) for name in re.findall(r"\b(?:haproxy|portrait)_[a-z_]+\b", " ".join(expressions()))}


def check_as_rules(exprs: list[str], folder: Path) -> subprocess.CompletedProcess[str]:
    """``promtool check rules`` on a rules file recording each of ``exprs``."""
    rules = folder / "dashboard-rules.yml"
    rules.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": [
        {"record": f"portrait:dashboard:expr_{index}", "expr": expr} for index, expr in enumerate(exprs)]}]}))
    return promtool("check", "rules", str(rules))


def test_the_committed_json_is_what_the_generator_builds() -> None:
    assert OUTPUT.read_text() == render(), "regenerate it: python -m assets.grafana.dashboard"
    board = dashboard()
    assert board["uid"] == "portrait-ha" and board["templating"]["list"][0]["type"] == "datasource"
    assert all(target["datasource"]["uid"] == "${datasource}"
               for panel in board["panels"] for target in panel.get("targets", []))


def test_the_panels_operators_asked_for_are_there() -> None:
    titles = {panel["title"] for panel in dashboard()["panels"]}
    assert {"Throughput", "Latency split: queue, generate, send", "Workers ready / configured", "Restarts by cause",
            "GPU temperature", "GPU memory", "Per-account usage", "Webhook backlog"} <= titles


@needs_promtool
def test_every_expression_is_valid_promql(tmp_path: Path) -> None:
    exprs = expressions()
    assert len(exprs) >= 15 and not any("$" in expr for expr in exprs)
    checked = check_as_rules(exprs, tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in checked.stdout
    broken = check_as_rules([*exprs, exprs[0].replace("(", "((", 1)], tmp_path)  # the check can fail
    assert broken.returncode != 0 and f'"portrait:dashboard:expr_{len(exprs)}": could not parse' in broken.stderr


def test_every_metric_it_reads_is_in_the_metrics_table() -> None:
    table = RUNBOOK.read_text().split("## Pointing Prometheus at the cluster")[1].split("\n## ")[0]
    documented = set(re.findall(r"\b(?:haproxy|portrait)_[a-z_]+\b", table))
    assert metric_names() - documented == set()
    assert {"portrait_jobs_account_gpu_seconds_total", "portrait_jobs_queue_wait_seconds"} <= metric_names()

