"""The Grafana dashboard of a portrait-ha cluster, built with grafana-foundation-sdk (requirements-dev.txt).

``python -m assets.grafana.dashboard`` writes ``assets/grafana/portrait-ha.json`` (committed: import it in Grafana,
docs/alerts.md#the-grafana-dashboard); ``--check`` says whether the committed file is what this builds.
Every expression reads metrics of the scrape config example's jobs (assets/prometheus/prometheus.example.yml).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from grafana_foundation_sdk.builders.common import ReduceDataOptions, VizLegendOptions
from grafana_foundation_sdk.builders.dashboard import Dashboard as DashboardBuilder
from grafana_foundation_sdk.builders.dashboard import DatasourceVariable, Row
from grafana_foundation_sdk.builders.prometheus import Dataquery
from grafana_foundation_sdk.builders.stat import Panel as Stat
from grafana_foundation_sdk.builders.timeseries import Panel as Timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import BigValueGraphMode, LegendDisplayMode, LegendPlacement
from grafana_foundation_sdk.models.dashboard import DataSourceRef

OUTPUT = Path(__file__).with_name("portrait-ha.json")
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
RATE = "[$__rate_interval]"
GENERATE = 'endpoint=~"/generate.*"'
Queries = list[tuple[str, str]]
PANELS: list[tuple[str, list[tuple[str, str, str, Queries]]]] = [
    ("Traffic", [
        ("Throughput", "Images made and jobs ended per minute (jobs by outcome).", "short", [
            (f"60 * sum(rate(portrait_worker_images_total{RATE}))", "images / min"),
            (f"60 * sum by (status) (rate(portrait_jobs_finished_total{RATE}))", "jobs {{status}} / min")]),
        ("Latency split: queue, generate, send", "Where a job's time goes: waiting for a worker (jobs API: p95 to "
         "the first step; HAProxy: every job through the worker queue, mean of its last 1024), generating on the "
         "GPU, and the worker's whole request (generate + encode + send).", "s", [
            (f"histogram_quantile(0.95, sum by (le) (rate(portrait_jobs_queue_wait_seconds_bucket{RATE})))",
             "queue p95 (jobs API)"),
            ('max(haproxy_backend_queue_time_average_seconds{proxy="workers"})', "queue mean (HAProxy)"),
            (f"sum(rate(portrait_worker_generating_seconds_total{RATE})) / "
             f"sum(rate(portrait_worker_steps_per_second_count{RATE}))", "generate mean"),
            (f"sum(rate(portrait_worker_request_duration_seconds_sum{{{GENERATE}}}{RATE})) / "
             f"sum(rate(portrait_worker_request_duration_seconds_count{{{GENERATE}}}{RATE}))",
             "worker request mean (generate + send)")]),
    ]),
    ("Capacity and restarts", [
        ("Workers ready / configured", "Workers UP in HAProxy's workers backend against those configured, and "
         "GPU duty cycle (share of time generating).", "short", [
            ('sum by (instance) (haproxy_server_status{proxy="workers", state="UP"})', "ready {{instance}}"),
            ('count by (instance) (haproxy_server_status{proxy="workers", state="UP"})', "configured {{instance}}"),
            (f"sum(rate(portrait_worker_generating_seconds_total{RATE}))", "GPUs busy (duty cycle)")]),
        ("Restarts by cause", "Deaths of supervised parts per hour, by node, part and cause (crash, OOM, hung).",
         "short", [
            (f"3600 * sum by (node, part, cause) (rate(portrait_sidecar_deaths_total{RATE})) > 0",
             "{{node}}/{{part}} {{cause}}"),
            ("sum by (node, part) (portrait_sidecar_crash_looped) > 0", "{{node}}/{{part}} crash-looped")]),
    ]),
    ("GPU", [
        ("GPU temperature", "Core temperature (NVML, the sidecar of each GPU host); alert above 87 °C.",
         "celsius", [("portrait_gpu_temperature_celsius", "{{instance}} GPU {{gpu}}")]),
        ("GPU memory", "Memory in use of each GPU's total (NVML, all processes).", "percentunit", [
            ("portrait_gpu_memory_used_bytes / portrait_gpu_memory_total_bytes", "{{instance}} GPU {{gpu}}")]),
    ]),
    ("Accounts and webhooks", [
        ("Per-account usage", "GPU seconds per minute and images per minute by account (keyless jobs: "
         "anonymous); quota refusals per minute.", "short", [
            (f"60 * sum by (account) (rate(portrait_jobs_account_gpu_seconds_total{RATE}))",
             "{{account}} GPU s / min"),
            (f"60 * sum by (account) (rate(portrait_jobs_account_images_total{RATE}))", "{{account}} images / min"),
            (f"60 * sum by (account, reason) (rate(portrait_jobs_account_refusals_total{RATE})) > 0",
             "{{account}} refused ({{reason}}) / min")]),
        ("Webhook backlog", "Deliveries pending, and how long the most overdue one has been due (alert: 10 min).",
         "short", [
            ("max(portrait_jobs_webhook_pending_deliveries)", "pending deliveries"),
            ("max(portrait_jobs_webhook_oldest_due_age_seconds)", "oldest due (s)")]),
    ]),
]
"""Rows of panels: (title, description, unit, [(PromQL, legend)])."""
STATS = [
    ("Workers ready", 'sum(haproxy_backend_active_servers{proxy="workers"})', "short"),
    ("Jobs failed (1 h)", 'sum(increase(portrait_jobs_finished_total{status="failed"}[1h]))', "short"),
    ("Webhook oldest due", "max(portrait_jobs_webhook_oldest_due_age_seconds)", "s"),
    ("Crash-looped parts", "sum(portrait_sidecar_crash_looped)", "short"),
]
"""The figures across the top: (title, PromQL, unit)."""


def query(expr: str, legend: str, ref: str) -> Dataquery:
    return Dataquery().expr(expr).legend_format(legend).ref_id(ref).datasource(DATASOURCE)


def build() -> dict:
    """The dashboard as Grafana's JSON model."""
    board = (DashboardBuilder("portrait-ha").uid("portrait-ha").tags(["portrait-ha"]).refresh("30s")
             .time("now-3h", "now").timezone("browser").editable()
             .with_variable(DatasourceVariable("datasource").label("Prometheus").type("prometheus")))
    for index, (title, expr, unit) in enumerate(STATS):
        board.with_panel(Stat().title(title).unit(unit).datasource(DATASOURCE).height(4).span(6)
                         .reduce_options(ReduceDataOptions().calcs(["lastNotNull"])).graph_mode(BigValueGraphMode.AREA)
                         .with_target(query(expr, title, chr(ord("A") + index))))
    for row, panels in PANELS:
        board.with_row(Row(row))
        for title, description, unit, queries in panels:
            panel = (Timeseries().title(title).description(description).unit(unit).datasource(DATASOURCE)
                     .height(9).span(12).min(0).legend(VizLegendOptions().show_legend(True)
                                                       .display_mode(LegendDisplayMode.LIST)
                                                       .placement(LegendPlacement.BOTTOM)))
            for index, (expr, legend) in enumerate(queries):
                panel.with_target(query(expr, legend, chr(ord("A") + index)))
            board.with_panel(panel)
    return json.loads(json.dumps(board.build(), cls=JSONEncoder))


def render() -> str:
    return json.dumps(build(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when the committed JSON differs")
    if parser.parse_args(argv).check:
        same = OUTPUT.read_text() == render()
        print(f"{OUTPUT}: {'up to date' if same else 'differs: run python -m assets.grafana.dashboard'}")
        return 0 if same else 1
    OUTPUT.write_text(render())
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
