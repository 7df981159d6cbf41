"""What each layer adds to one generation (``--standin``): paths (a)-(f) on the fixed-latency stand-in."""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Callable

import httpx

from bench.harness.browser_client import BrowserProtocolClient
from bench.harness.cluster_options import ClusterOptions
from bench.harness.generation import Job
from bench.harness.gradio_api_client import GradioApiClient
from bench.harness.launched_cluster import LaunchedCluster
from bench.harness.rest_client import RestClient
from bench.report import (
    LatencyStats,
    load_averages,
    machine_summary,
    markdown_table,
)
from bench.serving.inprocess import InProcessParts
from bench.serving.measure import PROMPT, measure_latency
from bench.serving.report import PATH_NAMES

LAYER_PATH_NAMES = {
    **PATH_NAMES,
    "a": "(a) in-process stand-in generate",
    "e": "(e) gradio_client with one TLS context via HAProxy",
    "f": "(f) Gradio queue protocol via HAProxy (one keep-alive connection)",
    "check": "client PNG check (decode + hash)",
}
"""The paths of the layer report (``--standin``): (e) and (f) split (d) into the web front and gradio_client."""
LAYERS = [
    # (name, the paths whose p50/p99 it is: plus, minus, the goal in ms or None)
    ("worker HTTP + encode, (b) − (a)", ["b"], ["a"], None),
    ("PNG encode alone (worker's `encode_png`)", ["encode"], [], None),
    ("worker HTTP alone, (b) − (a) − encode − client check", ["b"], ["a", "encode", "check"], None),
    ("HAProxy, (c) − (b)", ["c"], ["b"], 10.0),
    ("web front + gradio_client, (d) − (c)", ["d"], ["c"], 40.0),
    ("web front + gradio_client with one TLS context, (e) − (c)", ["e"], ["c"], 40.0),
    ("web front alone (Gradio's queue protocol), (f) − (c)", ["f"], ["c"], None),
    ("gradio_client alone, (d) − (f)", ["d"], ["f"], None),
    ("gradio_client with one TLS context alone, (e) − (f)", ["e"], ["f"], None),
]
"""The rows of the layer report (``--standin``)."""


def measure_layers(args: argparse.Namespace) -> tuple[dict[int, dict[str, list[float]]], list[tuple[float, ...]]]:
    """Per size, the seconds of every path and in-process part (``--standin``); the load averages before/after."""
    options = dataclasses.replace(ClusterOptions.from_args(args), model=f"standin:{args.standin:g}", nodes=1)
    loads = [os.getloadavg()]
    results: dict[int, dict[str, list[float]]] = {}
    with LaunchedCluster(options, name="serving-layers") as cluster:
        rest_worker = RestClient(cluster.spec.workers[0].worker.url, headers=cluster.internal_headers)
        rest_public = RestClient(cluster.public_url)
        gradio = GradioApiClient(cluster.public_url + "/")
        gradio_one_tls = GradioApiClient(cluster.public_url + "/", tls_context=httpx.create_ssl_context())
        queue_protocol = BrowserProtocolClient(cluster.public_url, api_name="generate")
        parts = InProcessParts(options)
        calls: dict[str, Callable[[Job], str]] = {
            "a": parts,
            "b": lambda j: rest_worker.generate(j).pixels_sha256,
            "c": lambda j: rest_public.generate(j).pixels_sha256,
            "d": lambda j: gradio.generate(j).pixels_sha256,
            "e": lambda j: gradio_one_tls.generate(j).pixels_sha256,
            "f": lambda j: queue_protocol.generate(j).pixels_sha256,
        }
        for size in args.sizes:
            job = Job(PROMPT, args.steps, size, size, seed=1000, guidance=args.guidance)
            latencies = measure_latency(calls, job, args.requests)
            in_process = parts.last(args.requests)
            results[size] = {**latencies, "a": in_process["generate"], **in_process}
        for client in (rest_worker, rest_public, gradio, gradio_one_tls, queue_protocol):
            client.close()
    loads.append(os.getloadavg())
    return results, loads


def layer_ms(stats: dict[str, LatencyStats], plus: list[str], minus: list[str]) -> tuple[float, ...]:
    """(p50, p99) of ``sum(plus) - sum(minus)``, as differences of each path's percentiles."""
    return tuple(sum(getattr(stats[k], q) for k in plus) - sum(getattr(stats[k], q) for k in minus)
                 for q in ("median_ms", "p99_ms"))


def render_layers(args: argparse.Namespace, results: dict[int, dict[str, list[float]]],
                  loads: list[tuple[float, ...]]) -> str:
    """The Markdown report of ``--standin``: each path's p50/p99, then the ms each layer adds."""
    stats = {size: {key: LatencyStats.from_seconds(v) for key, v in values.items()} for size, values in results.items()}
    sizes = list(results)
    size_headers = [f"{size}² {q}" for size in sizes for q in ("p50", "p99")]

    def cells(pairs: list[tuple[float, float]]) -> list[str]:
        return [f"{value:.1f}" for pair in pairs for value in pair]

    path_rows = [[LAYER_PATH_NAMES[key]] + cells([layer_ms(stats[size], [key], []) for size in sizes])
                 for key in LAYER_PATH_NAMES]
    layer_rows = [[name] + cells([layer_ms(stats[size], plus, minus) for size in sizes])
                  + [f"≤ {goal:g}" if goal else "–"] for name, plus, minus, goal in LAYERS]
    return "\n".join([
        "# Serving layers with the fixed-latency stand-in",
        "",
        f"The worker serves `standin:{args.standin:g}`: **not a model**; each job sleeps {args.standin:g} s over "
        f"{args.steps} reported steps, then returns a gradient-with-grain PNG of the asked size. 1 node, one client, "
        f"{args.requests} sequential requests per path and size (interleaved round-robin, same seeds, "
        "pixel-identical on every path), after one warm-up each. p99 of so few requests is close to the maximum.",
        "",
        f"{machine_summary()}. {load_averages(loads)}.",
        "",
        "## Each path (ms)",
        "",
        markdown_table(["path", *size_headers], path_rows),
        "",
        "## What each layer adds (ms; differences of the paths' p50 and p99)",
        "",
        markdown_table(["layer", *size_headers, "goal"], layer_rows),
        "",
        "Every remote path's client also decodes and hashes the PNG (the check row), so it is in (b) − (a) and "
        "cancels out of the later differences; the encode is in (b) − (a) only. A negative difference of two p99s "
        "is noise (the paths' slowest requests differ), not a gain. (d) is `gradio_client` as it comes; (e) gives "
        "it one TLS context (`ssl_verify=httpx.create_ssl_context()`), which its per-call `httpx` clients then "
        "share instead of each loading the CA bundle again; (f) speaks Gradio's queue protocol (join, SSE stream, "
        "file download) over one keep-alive connection, without `gradio_client`.",
        "",
        f"Reproduce: `{args.reproduce}`",
    ])
