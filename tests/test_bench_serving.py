"""bench.serving's layer report (``--standin``): the arithmetic of what each layer adds, without a cluster."""

from __future__ import annotations

from bench.report import LatencyStats
from bench.serving import layer_ms, parse_args, render_layers


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
