"""Serving benchmark: what each layer adds to one generation, and 1 vs 2 workers under load.

The command line (``python -m bench.serving``): its flags, and which measurement they ask for.
"""

from __future__ import annotations

import argparse
import operator
from collections.abc import Callable
from functools import reduce

from bench.cli import benchmark_parser, parse_benchmark_args, prepare_run
from bench.harness.cluster_options import ClusterOptions
from bench.harness.generation import Job
from bench.harness.gradio_api_client import GradioApiClient
from bench.harness.launched_cluster import LaunchedCluster
from bench.harness.rest_client import RestClient
from bench.report import (
    write_results,
)
from bench.serving.inprocess import in_process_call
from bench.serving.layers import measure_layers, render_layers
from bench.serving.measure import PROMPT, measure_latency, measure_throughput
from bench.serving.report import plot, render
from bench.serving.saturation import measure_saturation, render_saturation


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line flags (see the module docstring)."""
    parser = benchmark_parser("python -m bench.serving", __doc__, steps=8, size=512)
    parser.add_argument("--guidance", type=float, default=0.0, help="Guidance scale.")
    parser.add_argument("--runs", type=int, default=8, help="Timed repetitions per path.")
    parser.add_argument("--concurrency", type=int, default=4, help="Concurrent REST clients for requests/s.")
    parser.add_argument("--seconds", type=float, default=15.0, help="Length of each throughput phase.")
    parser.add_argument("--rounds", type=int, default=3,
                        help="Throughput rounds; each runs a 1-worker then a 2-worker phase (interleaved).")
    parser.add_argument("--max-requests", type=int, default=200, help="Most requests per client per phase.")
    layers = parser.add_argument_group("layer costs with the fixed-latency stand-in (not a model)")
    layers.add_argument("--standin", type=float, default=None, metavar="SECONDS",
                        help="Measure what each layer adds, on 1 node serving 'standin:SECONDS' (--model is ignored).")
    layers.add_argument("--sizes", type=int, nargs="+", default=[512, 1024], help="Square image sides (--standin).")
    layers.add_argument("--requests", type=int, default=50, help="Sequential requests per path and size (--standin).")
    layers.add_argument("--saturation", action="store_true",
                        help="Instead of layer costs: GPU duty cycle and 1 vs 2 worker jobs/s under saturating load, "
                        "without and with the dispatch agent (--standin; --concurrency, --seconds, --rounds, --size).")
    return parse_benchmark_args(parser, argv)


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark, print the table, write the results files."""
    args = parse_args(argv)
    prepare_run()
    if args.saturation and args.standin is None:
        raise SystemExit("python -m bench.serving: --saturation needs --standin SECONDS")
    if args.standin is not None:
        if args.saturation:
            name, markdown = "serving-saturation", render_saturation(args, *measure_saturation(args))
        else:
            name, markdown = "serving-layers", render_layers(args, *measure_layers(args))
        print(markdown)
        for path in write_results(name, markdown, None):
            print(f"wrote {path}")
        return
    options = ClusterOptions.from_args(args)
    job = Job(PROMPT, args.steps, args.size, args.size, seed=1000, guidance=args.guidance)
    with LaunchedCluster(options, name="serving") as cluster:
        first = cluster.spec.workers[0]
        rest_worker = RestClient(first.worker.url, headers=cluster.internal_headers)
        rest_public = RestClient(cluster.public_url)
        gradio = GradioApiClient(cluster.public_url + "/")
        calls: dict[str, Callable[[Job], str]] = {
            "a": in_process_call(options),
            "b": lambda j: rest_worker.generate(j).pixels_sha256,
            "c": lambda j: rest_public.generate(j).pixels_sha256,
            "d": lambda j: gradio.generate(j).pixels_sha256,
        }
        latencies = measure_latency(calls, job, args.runs)
        gradio.close()
        counts = (1, min(2, len(cluster.spec.workers)))
        phases = [
            measure_throughput(cluster, workers, job, args.concurrency, args.seconds, args.max_requests)
            for _ in range(args.rounds) for workers in counts
        ]
        throughput = [reduce(operator.add, [p for p in phases if p.workers == w]) for w in counts]
    markdown = render(args, latencies, throughput)
    print(markdown)
    for path in write_results("serving", markdown, plot(latencies, throughput)):
        print(f"wrote {path}")
