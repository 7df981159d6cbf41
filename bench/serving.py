"""Serving benchmark: what each layer adds to one generation, and 1 vs 2 workers under load.

    python -m bench.serving                       # demo model, 512x512, 8 steps, CPU
    python -m bench.serving --runs 20 --size 768  # more runs, larger images

It starts its own cluster (``launch.py``: HAProxy, sidecar, 2 nodes) on free loopback ports,
loads the same model in this process, and runs the same job (same prompt, size, steps and
seed per repetition) along four paths, interleaved round-robin so that drift on the machine
hits every path alike:

(a) ``PortraitPipeline.generate`` in this process (the floor),
(b) one worker's REST API (``POST /generate`` on the worker),
(c) HAProxy's public ``/generate`` (HAProxy -> least-loaded worker),
(d) ``gradio_client`` through HAProxy's public frontend (HAProxy -> web front -> HAProxy's
    worker frontend -> worker, with per-step progress streamed back).

Every path must return the pixel-identical image for a given seed (checked). It prints
median and p95 per path and the overhead ratio vs (a), then measures requests/s through
HAProxy with ``--concurrency`` REST clients: ``--rounds`` rounds of a ``--seconds`` phase with
one worker (the other set to ``maint`` in HAProxy), then one with two, so that other load on
the machine hits both alike; each phase counts the jobs completed inside it. Results go to
``bench/results/serving.md`` and ``serving.png``.

On a GPU machine, benchmark a real model with its own settings, e.g.::

    python -m bench.serving --model awportrait-z --steps 8 --size 1024 --runs 10 --threads 0
    python -m bench.serving --model sdxl --steps 30 --guidance 7.5 --size 1024 --nodes 2

``--model`` takes what ``python -m webui.worker --model`` takes (the weights must be in the
local Hugging Face cache or reachable); ``--threads 0`` leaves torch's thread count alone
(on CPU the default, 1 thread per worker, keeps two workers from fighting over two cores).
Each worker uses the GPU the usual CUDA rules give it; run one node per GPU.

**Layer costs with a fixed-latency stand-in** (``--standin SECONDS``): the workers serve
``--model standin:SECONDS`` (``webui.worker.standin``: not a model; it sleeps SECONDS per job and
returns a real image of the asked size), so what each layer adds is not lost in a model's
variance or CPU contention. One node; at each of ``--sizes``, ``--requests`` sequential
requests per path from one client (no queueing), interleaved as above; in-process, the
generate call, the worker's PNG encode and the clients' PNG check (decode + pixel hash) are
timed apart. Two more paths split (d): (e) ``gradio_client`` given one TLS context for all its
requests, and (f) Gradio's queue protocol (join, SSE stream, download) spoken directly over one
keep-alive connection. Added ms per layer (p50/p99 differences): worker HTTP + encode = (b) - (a),
HAProxy = (c) - (b), web front + gradio_client = (d) - (c), web front alone = (f) - (c),
gradio_client alone = (d) - (f). The load average is taken before and after. Results go to
``bench/results/serving-layers.md``::

    python -m bench.serving --standin 0.5                       # 512 and 1024, 50 requests each
    python -m bench.serving --standin 0.2 --requests 15 --sizes 512 1024

**Duty cycle under saturating load** (``--standin SECONDS --saturation``): two clusters of two
stand-in nodes, one whose workers have no dispatch agent (one job per worker until its response
is sent, PNG encoding included: as before the agent) and one with it
(``webui/worker/dispatch_agent.py``). Each of ``--rounds`` rounds runs a ``--seconds`` phase per
cluster with 1 worker in rotation, then 2, ``--concurrency`` REST clients at ``--size``² back to
back. Per phase: jobs/s completed inside it, failed requests, and the duty cycle: the workers'
``portrait_worker_generating_seconds_total`` growth over the phase (its first second left out)
divided by its wall time and worker count. Results go to ``bench/results/serving-saturation.md``::

    python -m bench.serving --standin 1.0 --saturation --size 1024 --seconds 15 --rounds 2
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import logging
import operator
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import reduce
from typing import TYPE_CHECKING

import httpx

from bench.cli import benchmark_parser, parse_benchmark_args, prepare_run
from bench.harness.clients import BrowserProtocolClient, GradioApiClient, Job, RestClient, check_image, pixels_digest
from bench.harness.cluster import ClusterOptions, LaunchedCluster
from bench.harness.load import OK, Clock, LoadClient, LoadRunner, Record, timed_call
from bench.report import (
    LatencyStats,
    fmt_ms,
    load_averages,
    machine_summary,
    markdown_table,
    new_figure,
    write_results,
)

if TYPE_CHECKING:  # the worker's modules import torch: loaded only where a pipeline runs in this process
    from webui.schema import EffectiveParams
    from webui.worker.servable import PipelineBase

logger = logging.getLogger("bench.serving")

PROMPT = "studio portrait of a woman with short dark hair, soft window light, 85mm"
PATH_NAMES = {
    "a": "(a) in-process pipeline",
    "b": "(b) worker REST",
    "c": "(c) HAProxy REST",
    "d": "(d) gradio_client via HAProxy",
}
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


@dataclass(frozen=True)
class Throughput:
    """Requests/s through HAProxy with a given number of workers in rotation (one or more phases)."""

    workers: int
    clients: int
    ok: int
    failed: int
    seconds: float
    phases: int = 1

    @property
    def per_second(self) -> float:
        """Completed requests per second of wall time."""
        return self.ok / self.seconds if self.seconds > 0 else 0.0

    def __add__(self, other: Throughput) -> Throughput:
        return Throughput(self.workers, self.clients, self.ok + other.ok, self.failed + other.failed,
                          self.seconds + other.seconds, self.phases + other.phases)


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


def in_process_call(options: ClusterOptions) -> Callable[[Job], str]:
    """Load the model in this process; a call that runs a job on it and returns the pixel digest."""
    pipeline = load_in_process(options)

    def call(job: Job) -> str:
        return pixels_digest(pipeline.generate(job_params(pipeline, job))[0])

    return call


def load_in_process(options: ClusterOptions) -> PipelineBase:
    """What a worker of ``options`` serves (``webui.worker.servable.load_pipeline``), loaded in this process."""
    from webui.settings import WorkerSettings
    from webui.worker.servable import load_pipeline

    return load_pipeline(WorkerSettings(model=options.model, lora=options.lora, threads=options.threads))


def job_params(pipeline: PipelineBase, job: Job) -> EffectiveParams:
    """``job`` as the pipeline's ``EffectiveParams``, as a worker makes them."""
    from webui.schema import GenerationRequest

    return pipeline.effective_params(GenerationRequest.model_validate(job.rest_body()), seed=job.seed)


class InProcessParts:
    """Path (a) for the layer report: generate, the worker's PNG encode and the clients' PNG check, timed apart.

    A call does all three, like a worker and its client would (so every path draws the same
    pixels), and appends each part's seconds to ``seconds``.
    """

    PARTS = ("generate", "encode", "check")

    def __init__(self, options: ClusterOptions) -> None:
        from webui.images import encode_png

        self.pipeline = load_in_process(options)
        self.encode_png = encode_png
        self.seconds: dict[str, list[float]] = {part: [] for part in self.PARTS}

    def __call__(self, job: Job) -> str:
        marks = [time.perf_counter()]
        image = self.pipeline.generate(job_params(self.pipeline, job))[0]
        marks.append(time.perf_counter())
        encoded = self.encode_png(image)
        marks.append(time.perf_counter())
        digest = check_image(base64.b64decode(encoded), job)
        marks.append(time.perf_counter())
        for part, start, end in zip(self.PARTS, marks, marks[1:], strict=False):
            self.seconds[part].append(end - start)
        return digest

    def last(self, runs: int) -> dict[str, list[float]]:
        """Each part's last ``runs`` timings (the warm-up call left out)."""
        return {part: values[-runs:] for part, values in self.seconds.items()}


def measure_latency(calls: dict[str, Callable[[Job], str]], job: Job, runs: int) -> dict[str, list[float]]:
    """Time ``runs`` repetitions of every path, round-robin with a rotating start.

    Repetition ``r`` uses seed ``job.seed + r`` on every path and checks that all paths drew
    the same pixels. One untimed warm-up call per path comes first.
    """
    keys = list(calls)
    for key in keys:
        calls[key](job)
    latencies: dict[str, list[float]] = {key: [] for key in keys}
    for rep in range(runs):
        rep_job = Job(job.prompt, job.steps, job.width, job.height, job.seed + rep, job.guidance)
        order = keys[rep % len(keys):] + keys[:rep % len(keys)]
        digests = {}
        for key in order:
            started = time.perf_counter()
            digests[key] = calls[key](rep_job)
            latencies[key].append(time.perf_counter() - started)
        if len(set(digests.values())) != 1:
            raise RuntimeError(f"paths drew different images for seed {rep_job.seed}: {digests}")
        logger.info("repetition %d/%d: %s", rep + 1, runs,
                    ", ".join(f"{k}={latencies[k][-1] * 1000:.0f}ms" for k in keys))
    return latencies


def measure_throughput(cluster: LaunchedCluster, workers: int, job: Job, clients: int, seconds: float,
                       max_requests: int, hash_pixels: bool = True) -> Throughput:
    """Requests/s through HAProxy's public ``/generate`` with ``workers`` workers in rotation.

    ``clients`` REST clients send jobs back to back for ``seconds``; the rate counts the jobs
    that completed inside that window. Without ``hash_pixels`` they check each answer's PNG
    header only (``RestClient.generate_unhashed``), leaving the CPU to the workers.
    """
    names = [node.name for node in cluster.spec.workers]
    with cluster.only_workers(names[:workers]):
        return rest_throughput(cluster.public_url, workers, job, clients, seconds, max_requests, hash_pixels)


def rest_throughput(public_url: str, workers: int, job: Job, clients: int, seconds: float, max_requests: int,
                    hash_pixels: bool = True) -> Throughput:
    """``measure_throughput`` at ``public_url``, with the ``workers`` in rotation there (counted, not chosen)."""
    clock = Clock()
    rest = [RestClient(public_url) for _ in range(clients)]

    def client_call(index: int) -> Callable[[int], Record]:
        def call(i: int) -> Record:
            numbered = Job(job.prompt, job.steps, job.width, job.height, job.seed + 1000 * index + i, job.guidance)
            generate = rest[index].generate if hash_pixels else rest[index].generate_unhashed
            return timed_call(clock, f"rest-{index}", "rest", True, lambda: generate(numbered))
        return call

    records = LoadRunner(
        [LoadClient(f"rest-{i}", client_call(i), max_requests=max_requests) for i in range(clients)], seconds
    ).run()
    for client in rest:
        client.close()
    # Steady state: what completed inside the window (requests still running at its end finish
    # but do not count, so the tail of a phase does not dilute it).
    done = [r for r in records if r.end <= seconds]
    ok = [r for r in done if r.outcome == OK]
    return Throughput(workers, clients, len(ok), len(done) - len(ok), seconds)


def render(args: argparse.Namespace, latencies: dict[str, list[float]], throughput: list[Throughput]) -> str:
    """The Markdown report."""
    stats = {key: LatencyStats.from_seconds(values) for key, values in latencies.items()}
    floor = stats["a"].median_ms
    latency_rows = [
        [PATH_NAMES[key], s.count, fmt_ms(s.median_ms), fmt_ms(s.p95_ms), f"{s.median_ms / floor:.2f}×",
         f"{s.median_ms - floor:+.0f}"]
        for key, s in stats.items()
    ]
    base = throughput[0].per_second
    throughput_rows = [
        [t.workers, t.clients, t.phases, t.ok, t.failed, f"{t.seconds:.0f}", f"{t.per_second:.2f}",
         f"{t.per_second / base:.2f}×" if base else "–"]
        for t in throughput
    ]
    return "\n".join([
        "# Serving benchmark",
        "",
        f"Model `{args.model}`, {args.size}×{args.size}, {args.steps} steps, guidance {args.guidance:g}, "
        f"{args.threads or 'default'} torch thread(s) per worker, {args.nodes} nodes. {machine_summary()}.",
        "",
        f"## Latency of one generation ({args.runs} interleaved runs per path, same seeds; "
        "every path returned pixel-identical images)",
        "",
        markdown_table(["path", "runs", "median ms", "p95 ms", "× in-process", "added ms"], latency_rows),
        "",
        f"## Throughput through HAProxy ({args.concurrency} concurrent REST clients; {args.rounds} rounds of a "
        f"{args.seconds:g} s phase with 1 worker, then with 2)",
        "",
        markdown_table(["workers", "clients", "phases", "completed", "failed", "seconds", "req/s", "× 1 worker"],
                       throughput_rows),
        "",
        f"Reproduce: `{args.reproduce}`",
    ])


def plot(latencies: dict[str, list[float]], throughput: list[Throughput]):
    """Latency per path (box plot) and requests/s per worker count (bars)."""
    figure, axes = new_figure(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [3, 1]})
    left, right = axes[0]
    keys = list(latencies)
    left.boxplot([[v * 1000 for v in latencies[k]] for k in keys], orientation="horizontal", showfliers=True)
    left.set_yticks(range(1, len(keys) + 1), [PATH_NAMES[k] for k in keys])
    left.invert_yaxis()
    left.set_xlabel("latency of one generation (ms)")
    left.set_title("Where the time goes")
    left.grid(axis="x", alpha=0.3)
    bars = right.bar([f"{t.workers} worker{'s' * (t.workers > 1)}" for t in throughput],
                     [t.per_second for t in throughput], color=["#c9a227", "#7a5c00"][: len(throughput)])
    right.bar_label(bars, fmt="%.2f")
    right.set_ylabel("requests / s")
    right.set_title("Throughput via HAProxy")
    figure.tight_layout()
    return figure


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


SATURATION_VARIANTS = {False: "without dispatch agent (before)", True: "with dispatch agent (after)"}
WARM_UP = 1.0
"""Seconds at the start of a saturation phase left out of its duty cycle (the queue fills)."""


def generating_seconds(worker_urls: list[str]) -> float:
    """Sum of ``portrait_worker_generating_seconds_total`` over the workers at ``worker_urls``."""
    total = 0.0
    for url in worker_urls:
        text = httpx.get(f"{url}/metrics", timeout=10).text
        total += next(float(line.split()[1]) for line in text.splitlines()
                      if line.startswith("portrait_worker_generating_seconds_total "))
    return total


@dataclass(frozen=True)
class Saturation:
    """One saturation phase: throughput and the duty cycle of the workers in rotation."""

    agent: bool
    throughput: Throughput
    duty: float


def measure_saturation_phase(cluster: LaunchedCluster, agent: bool, workers: int, job: Job, args: argparse.Namespace
                             ) -> Saturation:
    """One phase with the first ``workers`` workers in rotation (``saturation_phase``)."""
    nodes = cluster.node_names[:workers]
    with cluster.only_workers(nodes):
        return saturation_phase(cluster.public_url, [cluster.part_url(node, "worker") for node in nodes], agent, job,
                                args)


def saturation_phase(public_url: str, worker_urls: list[str], agent: bool, job: Job, args: argparse.Namespace
                     ) -> Saturation:
    """One phase: ``args.concurrency`` REST clients at ``public_url`` for ``args.seconds``; the duty cycle of the
    workers at ``worker_urls`` (those in rotation) sampled beside it."""
    samples: list[tuple[float, float]] = []

    def sample() -> None:
        for at in (WARM_UP, args.seconds):
            time.sleep(max(0.0, started + at - time.monotonic()))
            samples.append((time.monotonic(), generating_seconds(worker_urls)))

    started = time.monotonic()
    sampler = threading.Thread(target=sample, name="duty-sampler")
    sampler.start()
    throughput = rest_throughput(public_url, len(worker_urls), job, args.concurrency, args.seconds,
                                 args.max_requests, hash_pixels=False)
    sampler.join()
    (t0, g0), (t1, g1) = samples
    return Saturation(agent, throughput, (g1 - g0) / ((t1 - t0) * len(worker_urls)))


def measure_saturation(args: argparse.Namespace) -> tuple[list[Saturation], list[tuple[float, ...]]]:
    """Every phase of ``--saturation`` (both clusters up at once, phases interleaved); load averages."""
    job = Job(PROMPT, args.steps, args.size, args.size, seed=1000, guidance=args.guidance)
    # No slowstart: the phases take workers in and out of rotation, and a returning server's
    # maxconn ramps up over it (the agent's second slot would be withheld meanwhile).
    base = dataclasses.replace(ClusterOptions.from_args(args), model=f"standin:{args.standin:g}", nodes=2,
                               extra={"health": {"slowstart": 0}})
    loads = [os.getloadavg()]
    phases = []
    with contextlib.ExitStack() as stack:
        clusters = {agent: stack.enter_context(LaunchedCluster(dataclasses.replace(base, dispatch_agent=agent),
                                                               name=f"saturation-{'agent' if agent else 'plain'}"))
                    for agent in SATURATION_VARIANTS}
        for round_ in range(args.rounds):
            for agent, cluster in clusters.items():
                for workers in (1, 2):
                    phase = measure_saturation_phase(cluster, agent, workers, job, args)
                    logger.info("round %d, %s, %d worker(s): %.2f jobs/s, duty %.1f %%", round_ + 1,
                                SATURATION_VARIANTS[agent], workers, phase.throughput.per_second, 100 * phase.duty)
                    phases.append(phase)
    loads.append(os.getloadavg())
    return phases, loads


def render_saturation(args: argparse.Namespace, phases: list[Saturation], loads: list[tuple[float, ...]]) -> str:
    """The Markdown report of ``--saturation``: jobs/s, failures and duty cycle per variant and worker count."""
    rows, rates = [], {}
    for agent, name in SATURATION_VARIANTS.items():
        for workers in (1, 2):
            mine = [p for p in phases if p.agent == agent and p.throughput.workers == workers]
            total = reduce(operator.add, [p.throughput for p in mine])
            duties = [p.duty for p in mine]
            rates[agent, workers] = total.per_second
            rows.append([name, workers, total.phases, total.ok, total.failed, f"{total.per_second:.3f}",
                         f"{100 * sum(duties) / len(duties):.1f} %", f"{100 * min(duties):.1f} %"])
    ratio_rows = [[name, f"{rates[agent, 2] / rates[agent, 1]:.2f}×"] for agent, name in SATURATION_VARIANTS.items()]
    return "\n".join([
        "# GPU duty cycle under saturating load, with the fixed-latency stand-in",
        "",
        f"The workers serve `standin:{args.standin:g}`: **not a model**; each job sleeps {args.standin:g} s (the "
        f"'GPU' time), then the worker PNG-encodes a {args.size}×{args.size} image. Two clusters of two nodes, one "
        "without and one with the dispatch agent, both up at once; "
        f"{args.rounds} round(s) of a {args.seconds:g} s phase per cluster with 1 worker in rotation, then 2, "
        f"{args.concurrency} REST clients through HAProxy back to back (checking status, seed and PNG header, not "
        "decoding pixels: the clients share the machine). Duty cycle: growth of the workers' "
        f"generating seconds over each phase (its first {WARM_UP:g} s left out) / (wall time × workers).",
        "",
        f"**These are CPU numbers**: {machine_summary()}. {load_averages(loads)}. The encode competes with "
        "everything else on this machine for its cores.",
        "",
        markdown_table(["variant", "workers", "phases", "completed", "failed", "jobs/s", "duty cycle (mean)",
                        "duty cycle (worst phase)"], rows),
        "",
        markdown_table(["variant", "2 workers / 1 worker (jobs/s)"], ratio_rows),
        "",
        f"With the agent / without, 2 workers: {rates[True, 2] / rates[False, 2]:.2f}× the jobs/s.",
        "",
        f"Reproduce: `{args.reproduce}`",
    ])


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


if __name__ == "__main__":
    main()
