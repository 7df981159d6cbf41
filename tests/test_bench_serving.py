"""bench.serving's layer report (``--standin``): the arithmetic of what each layer adds, without a cluster."""

from __future__ import annotations

from bench.report import LatencyStats
from bench.serving.cli import parse_args
from bench.serving.layers import layer_ms, render_layers


def test_layer_costs_are_differences_of_the_paths_percentiles():
    seconds = {"a": [0.2] * 10, "encode": [0.05] * 10, "check": [0.01] * 10,
               "b": [0.3] * 10, "c": [0.305] * 10, "d": [0.345] * 10}
    stats = {key: LatencyStats.from_seconds(values) for key, values in seconds.items()}
    assert all(abs(value - 5.0) < 1e-9 for value in layer_ms(stats, ["c"], ["b"]))
    worker_alone = layer_ms(stats, ["b"], ["a", "encode", "check"])
    assert all(abs(value - 40.0) < 1e-9 for value in worker_alone)


def test_report_names_the_standin_and_the_load():
    args = parse_args(["--standin", "0.2", "--requests", "10", "--sizes", "512"])
    assert args.standin == 0.2 and args.sizes == [512] and parse_args([]).standin is None
    seconds = {key: [0.2 + i / 1000 for i in range(10)] for key in ("a", "b", "c", "d", "e", "f", "encode", "check")}
    seconds["f"] = [value + 0.03 for value in seconds["c"]]
    report = render_layers(args, {512: seconds}, [(2.0, 1.5, 1.0), (2.5, 1.6, 1.1)])
    assert "**not a model**" in report and "`standin:0.2`" in report
    assert "before: 2.00, 1.50, 1.00; after: 2.50, 1.60, 1.10" in report
    assert "| HAProxy, (c) − (b) | 0.0 | 0.0 | ≤ 10 |" in report
    assert "| web front alone (Gradio's queue protocol), (f) − (c) | 30.0 | 30.0 | – |" in report
    assert "| gradio_client alone, (d) − (f) | -30.0 | -30.0 | – |" in report


def test_node_host_duty_report_compares_the_labs_per_variant():
    """bench.hosts_saturation's report: one row per lab (without, then with the relayed dispatch agent)."""
    from bench.hosts_saturation import parse_args as hosts_args
    from bench.hosts_saturation import render as render_hosts
    from bench.serving.measure import Throughput
    from bench.serving.saturation import Saturation

    argv = ["--standin", "0.5", "--rounds", "2", "--seconds", "10"]
    args = hosts_args(argv)
    phases = [Saturation(agent, Throughput(2, 4, ok, failed, 10.0), duty) for agent, ok, failed, duty in
              ((False, 30, 0, 0.80), (False, 32, 0, 0.86), (True, 38, 1, 0.99), (True, 39, 0, 0.97))]
    idle = {False: {"sidecar": 1.7, "worker": 1.1}, True: {"sidecar": 8.1, "worker": 4.7}}
    report = render_hosts(args, argv, phases, [(1.0, 1.0, 1.0), (2.0, 2.0, 2.0)], idle)
    assert "**not a model**" in report and "`standin:0.5`" in report
    assert "| without dispatch agent (before) | 2 | 62 | 0 | 3.100 | 83.0 % | 80.0 % |" in report
    assert "| with dispatch agent (after) | 2 | 77 | 1 | 3.850 | 98.0 % | 97.0 % |" in report
    assert "With the agent / without: 1.24× the jobs/s." in report
    assert "| with dispatch agent (after) | 8.1 | 4.7 |" in report
    assert "`python -m bench.hosts_saturation --standin 0.5 --rounds 2 --seconds 10`" in report


def test_web_front_report_gives_each_fronts_share_over_its_own_worker():
    """bench.web_front: a web front's p50 minus its own worker's, per size; the command that reruns it."""
    from pathlib import Path

    from bench.web_front import Front, render
    from bench.web_front import parse_args as web_front_args

    args = web_front_args(["--baseline", "abc123", "--sizes", "1024", "--requests", "3"])
    fronts = [Front("baseline abc123", Path("/old")), Front("this tree", Path("."))]
    seconds = {1024: {"baseline abc123 web": [0.56, 0.55, 0.57], "baseline abc123 worker": [0.49, 0.48, 0.50],
                      "this tree web": [0.52] * 3, "this tree worker": [0.49] * 3}}
    report = render(args, fronts, seconds, [(1.0, 1.0, 1.0), (1.2, 1.0, 1.0)])
    assert "**not a model**" in report
    assert "`python -m bench.web_front --requests 3 --standin 0.2 --sizes 1024 --baseline abc123`" in report
    assert "| 1024² | baseline abc123 | 560 | " in report and " | 490 | 70.0 |" in report
    assert "| 1024² | this tree | 520 | " in report and report.rstrip().count(" | 30.0 |") == 1
