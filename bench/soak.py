"""Bounded soak: minutes of mixed traffic with random worker kills; nothing lost, nothing leaks.

    python -m bench.soak                      # 3 minutes, 2 worker kills, 5 clients
    python -m bench.soak --seconds 600 --kills 5
    pytest -m soak                            # the same, as a test (tests/test_soak.py)

It starts its own cluster (``launch.py``, 2 nodes, loopback, free ports) and keeps it busy
through HAProxy's public frontend with:

- browser tabs: the studio page's own protocol (cookie, ``/config``, queue join + SSE with
  progress, image download from the node); each tab is reopened every few jobs, like a
  person reloading the page;
- one ``gradio_client.Client`` reused for the whole soak (it keeps its first cookie, even
  after its node died);
- REST ``POST /generate`` clients.

A share of requests (``--malformed``, default 15 %) is deliberately bad: each client type
picks from its own catalogue (steps 0, a width that is not a multiple of 16, an unknown
field, broken JSON, ...) and the request must be refused with a readable message naming the
field, never a traceback. ``--kills`` times a random worker (the busy one when a job is
running) is SIGKILLed, at random moments at least ``--kill-gap`` seconds apart and only
while every node is UP.

Memory: every process of the cluster (launch.py, HAProxy, sidecar, web fronts, workers) is
sampled every ``--rss-interval`` seconds. A process is judged when it ran at least
``--judge-span`` seconds after its warm-up (``--warmup`` seconds after it first appeared):
its growth is the median of its last 3 samples minus the median of its first 3 after warm-up.
**Bound: growth at most ``--rss-bound-pct`` % (15) of its warmed-up RSS, and never more than
``--rss-bound-mb`` MB (150).**

Pass = zero lost good requests, every malformed request refused readably, every node part
UP in HAProxy at the end, every judged process within the memory bound. Writes
``bench/results/soak.md`` and ``soak.png``; exits 1 when the soak failed.

On a GPU machine: ``python -m bench.soak --model awportrait-z --threads 0 --size 1024 --seconds 1800``.
"""

from __future__ import annotations

import argparse
import logging
import random
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from bench.cli import benchmark_parser, parse_benchmark_args, prepare_run
from bench.harness.clients import BrowserProtocolClient, GradioApiClient, Job, Reply, RestClient
from bench.harness.cluster import ClusterOptions, LaunchedCluster
from bench.harness.load import OK, REJECTED, Clock, LoadClient, LoadRunner, Poller, Record, timed_call
from bench.harness.processes import Processes
from bench.report import LatencyStats, fmt_ms, machine_summary, markdown_table, new_figure, write_results

logger = logging.getLogger("bench.soak")

PROMPT = "candid portrait in a sunflower field, golden hour"
MB = 1024 * 1024

MalformedCall = tuple[Callable[[Any], Reply], list[str]]
"""A bad request for one client type: (call taking the client, words the refusal must contain)."""


def _rest_json(body: dict[str, Any]) -> Callable[[RestClient], Reply]:
    return lambda rest: RestClient.parse(rest.post_json(body), BAD_JOB)


BAD_JOB = Job(PROMPT, 4, 520, 512, seed=3)
"""A job whose width is no multiple of 16 (Z-Image's rule)."""

REST_MALFORMED: list[MalformedCall] = [
    (_rest_json({"prompt": PROMPT, "steps": 0}), ["steps"]),
    (_rest_json({"prompt": PROMPT, "width": 520, "height": 512}), ["width", "16"]),
    (_rest_json({"prompt": PROMPT, "num_images": 99}), ["num_images"]),
    (_rest_json({"prompt": ""}), ["prompt"]),
    (_rest_json({"prompt": PROMPT, "guidance": "lots"}), ["guidance"]),
    (_rest_json({"prompt": PROMPT, "seed": -3}), ["seed"]),
    (_rest_json({"prompt": PROMPT, "colour": "red"}), ["colour"]),
    (_rest_json({"prompt": PROMPT, "init_image": "not an image"}), ["init_image"]),
    (lambda rest: RestClient.parse(rest.post_raw(b'{"prompt": "unterminated'), BAD_JOB), ["JSON"]),
]
PAGE_MALFORMED: list[MalformedCall] = [
    # Values the page itself lets a person send: its width slider moves in steps of 8.
    (lambda client: client.generate(BAD_JOB), ["width", "16"]),
    (lambda client: client.generate(Job("", 4, 256, 256, seed=3)), ["prompt"]),
]
GRADIO_MALFORMED: list[MalformedCall] = PAGE_MALFORMED + [
    # The client API takes plain numbers: the worker's limits apply.
    (lambda client: client.generate(Job(PROMPT, 500, 256, 256, seed=3)), ["steps"]),
]


@dataclass(frozen=True)
class RssSample:
    """One process's resident memory at one moment."""

    t: float
    pid: int
    role: str
    rss: int


@dataclass(frozen=True)
class RssVerdict:
    """How much one process grew after its warm-up, against the bound."""

    pid: int
    role: str
    baseline_mb: float
    final_mb: float
    span_s: float
    within_bound: bool | None
    """None: the process did not live long enough after warm-up to be judged."""

    @property
    def growth_mb(self) -> float:
        """Final minus warmed-up RSS, in MB."""
        return self.final_mb - self.baseline_mb

    @property
    def growth_pct(self) -> float:
        """Growth as a percentage of the warmed-up RSS."""
        return 100.0 * self.growth_mb / self.baseline_mb if self.baseline_mb else 0.0


@dataclass(frozen=True)
class Kill:
    """A worker the soak killed."""

    t: float
    node: str
    pid: int
    was_busy: bool


@dataclass
class SoakReport:
    """Everything a soak run found; ``problems()`` is empty when it passed."""

    options: argparse.Namespace
    records: list[Record]
    kills: list[Kill]
    rss: list[RssVerdict]
    rss_samples: list[RssSample]
    all_up_at_end: bool
    restarts: dict[str, Any]
    duration: float
    errors: list[str] = field(default_factory=list)

    @property
    def lost(self) -> list[Record]:
        """Good requests that got no image."""
        return [r for r in self.records if r.lost]

    @property
    def badly_refused(self) -> list[Record]:
        """Malformed requests that were accepted or refused without a readable message."""
        return [r for r in self.records if not r.good and r.outcome != REJECTED]

    def problems(self) -> list[str]:
        """Why the soak failed (empty list: it passed)."""
        problems = list(self.errors)
        problems += [f"lost good request: {r.client} at {r.start:.1f}s: {r.detail}" for r in self.lost]
        problems += [f"malformed request not refused readably: {r.client}: {r.detail}" for r in self.badly_refused]
        if not self.all_up_at_end:
            problems.append("not every node part was UP in HAProxy at the end")
        if len(self.kills) < self.options.kills:
            problems.append(f"only {len(self.kills)} of {self.options.kills} worker kills happened")
        problems += [
            f"{v.role} (pid {v.pid}) grew {v.growth_mb:.0f} MB ({v.growth_pct:.1f} %) over {v.span_s:.0f} s"
            for v in self.rss if v.within_bound is False
        ]
        if not any(v.within_bound is not None for v in self.rss):
            problems.append("no process lived long enough after warm-up to judge its memory")
        return problems


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line flags (see the module docstring)."""
    parser = benchmark_parser("python -m bench.soak", __doc__, steps=6, size=384)
    parser.add_argument("--seconds", type=float, default=180.0, help="Length of the traffic.")
    parser.add_argument("--kills", type=int, default=2, help="Worker SIGKILLs during the soak.")
    parser.add_argument("--kill-gap", type=float, default=40.0, help="Least seconds between two kills.")
    parser.add_argument("--browsers", type=int, default=2, help="Browser-protocol tabs.")
    parser.add_argument("--rest", type=int, default=2, help="REST clients.")
    parser.add_argument("--reopen-every", type=int, default=5, help="A tab reloads the page every N jobs.")
    parser.add_argument("--malformed", type=float, default=0.15, help="Share of malformed requests.")
    parser.add_argument("--pause", type=float, default=0.3, help="Longest think time between requests (s).")
    parser.add_argument("--seed", type=int, default=20261125, help="Seed of the soak's random choices.")
    parser.add_argument("--rss-interval", type=float, default=5.0, help="Seconds between RSS samples.")
    parser.add_argument("--warmup", type=float, default=45.0, help="Seconds after a process appears before judging.")
    parser.add_argument("--judge-span", type=float, default=60.0,
                        help="Least seconds of samples after warm-up for a process to be judged.")
    parser.add_argument("--rss-bound-pct", type=float, default=15.0, help="Largest RSS growth in percent.")
    parser.add_argument("--rss-bound-mb", type=float, default=150.0, help="Largest RSS growth in MB.")
    parser.add_argument("--no-write", action="store_true", help="Do not write bench/results/soak.*.")
    return parse_benchmark_args(parser, argv)


class RssSampler(Poller):
    """Samples the RSS of every process of the cluster in a thread."""

    def __init__(self, cluster: LaunchedCluster, clock: Clock, interval: float) -> None:
        super().__init__(interval, "rss-sampler")
        self.cluster = cluster
        self.clock = clock
        self.samples: list[RssSample] = []
        self.port_roles = {}
        for node in cluster.spec.nodes:
            self.port_roles[node.web.port] = f"{node.name}/web"
            self.port_roles[node.worker.port] = f"{node.name}/worker"

    def role(self, proc: psutil.Process) -> str:
        """A readable name for a cluster process: node1/worker, haproxy, sidecar, ..."""
        cmdline = proc.cmdline()
        for index, arg in enumerate(cmdline[:-1]):
            if arg == "--port" and cmdline[index + 1].isdigit() and int(cmdline[index + 1]) in self.port_roles:
                return self.port_roles[int(cmdline[index + 1])]
        text = " ".join(cmdline)
        for name in ("haproxy", "sidecar", "launch.py"):
            if name in text:
                return name
        return proc.name()

    def poll(self) -> None:
        """Sample every process of the cluster once."""
        now = self.clock.now()
        for proc in self.cluster.process_tree():
            try:
                self.samples.append(RssSample(now, proc.pid, self.role(proc), proc.memory_info().rss))
            except psutil.Error:
                continue

    def verdicts(self, warmup: float, judge_span: float, bound_pct: float, bound_mb: float) -> list[RssVerdict]:
        """One verdict per process seen (see the module docstring for the rule)."""
        verdicts = []
        for pid in sorted({s.pid for s in self.samples}):
            mine = [s for s in self.samples if s.pid == pid]
            judged = [s for s in mine if s.t >= mine[0].t + warmup]
            if len(judged) < 6:
                span = judged[-1].t - judged[0].t if judged else 0.0
                verdicts.append(RssVerdict(pid, mine[0].role, mine[0].rss / MB, mine[-1].rss / MB, span, None))
                continue
            baseline = statistics.median(s.rss for s in judged[:3]) / MB
            final = statistics.median(s.rss for s in judged[-3:]) / MB
            span = judged[-1].t - judged[0].t
            growth = final - baseline
            within = None if span < judge_span else (growth <= bound_mb and growth <= baseline * bound_pct / 100)
            verdicts.append(RssVerdict(pid, mine[0].role, baseline, final, span, within))
        return verdicts


class Traffic:
    """Builds the soak's clients; each request is good or (with some probability) malformed."""

    def __init__(self, cluster: LaunchedCluster, clock: Clock, args: argparse.Namespace) -> None:
        self.cluster = cluster
        self.clock = clock
        self.args = args
        self.closers: list[Callable[[], None]] = []

    def job(self, index: int, i: int) -> Job:
        """The ``i``-th good job of client ``index`` (distinct seeds)."""
        return Job(PROMPT, self.args.steps, self.args.size, self.args.size, seed=100_000 * (index + 1) + i)

    def client(self, name: str, kind: str, index: int, get: Callable[[int], Any], malformed: list[MalformedCall]
               ) -> LoadClient:
        """A load client of ``kind`` calling ``get(i)`` (its client for request ``i``)."""
        rng = random.Random(f"{self.args.seed}-{name}")

        def call(i: int) -> Record:
            client = get(i)
            if rng.random() < self.args.malformed:
                bad, words = rng.choice(malformed)
                return timed_call(self.clock, name, kind, False, lambda: bad(client), words)
            return timed_call(self.clock, name, kind, True, lambda: client.generate(self.job(index, i)))

        return LoadClient(name, call, max_requests=100_000, pause=rng.uniform(0, self.args.pause))

    def clients(self) -> list[LoadClient]:
        """Browser tabs, one reused gradio_client, REST clients."""
        url = self.cluster.public_url
        clients = []
        for index in range(self.args.browsers):
            clients.append(self.client(f"browser-{index}", "browser", index, self._tab(url), PAGE_MALFORMED))
        gradio = GradioApiClient(url + "/")
        self.closers.append(gradio.close)
        clients.append(self.client("gradio_client", "gradio_client", 50, lambda i: gradio, GRADIO_MALFORMED))
        for index in range(self.args.rest):
            rest = RestClient(url)
            self.closers.append(rest.close)
            clients.append(self.client(f"rest-{index}", "rest", 60 + index, lambda i, rest=rest: rest,
                                       REST_MALFORMED))
        return clients

    def _tab(self, url: str) -> Callable[[int], BrowserProtocolClient]:
        """A browser tab that reloads the page (new tab, new session) every few jobs."""
        current: list[BrowserProtocolClient] = []

        def get(i: int) -> BrowserProtocolClient:
            if i % self.args.reopen_every == 0:
                for old in current:
                    old.close()
                current[:] = [BrowserProtocolClient(url)]
            return current[0]

        self.closers.append(lambda: [tab.close() for tab in current])
        return get


class Killer:
    """Kills random workers at random moments while the load runs (in its own thread)."""

    def __init__(self, cluster: LaunchedCluster, clock: Clock, stop: threading.Event, args: argparse.Namespace) -> None:
        self.cluster = cluster
        self.clock = clock
        self.stop = stop
        self.args = args
        self.kills: list[Kill] = []
        self.errors: list[str] = []
        self.rng = random.Random(args.seed)

    def plan(self) -> list[float]:
        """Kill times: random, at least ``kill_gap`` apart, leaving time to recover before the end."""
        start, end = self.args.warmup * 0.5, self.args.seconds - self.args.kill_gap
        times, earliest = [], start
        for k in range(self.args.kills):
            latest = end - (self.args.kills - 1 - k) * self.args.kill_gap
            if latest < earliest:
                break
            times.append(self.rng.uniform(earliest, min(latest, earliest + self.args.kill_gap)))
            earliest = times[-1] + self.args.kill_gap
        return times

    def run(self) -> None:
        """Wait for each planned moment and for a whole cluster, then kill one worker."""
        try:
            for when in self.plan():
                if self.stop.wait(max(0.0, when - self.clock.now())):
                    return
                if not self._wait_all_up(timeout=60):
                    self.errors.append(f"cluster not whole at {self.clock.now():.0f}s; kill skipped")
                    continue
                busy = self.cluster.busy_workers(timeout=5)
                node = self.rng.choice(busy or self.cluster.node_names)
                pid = self.cluster.kill(node, "worker")
                self.kills.append(Kill(self.clock.now(), node, pid, bool(busy)))
        except Exception as exc:  # reported in the soak report
            self.errors.append(f"killer: {type(exc).__name__}: {exc}")

    def _wait_all_up(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.stop.is_set():
            if self.cluster.all_up():
                return True
            self.stop.wait(0.5)
        return False


def run_soak(args: argparse.Namespace, processes: Processes | None = None, run_dir: Path | None = None) -> SoakReport:
    """Start a cluster, soak it, judge it; the report.

    ``processes`` and ``run_dir`` as for ``LaunchedCluster`` (a test passes its own).
    """
    options = ClusterOptions.from_args(args)
    with LaunchedCluster(options, name="soak", processes=processes, run_dir=run_dir) as cluster:
        clock = Clock()
        traffic = Traffic(cluster, clock, args)
        runner = LoadRunner(traffic.clients(), args.seconds)
        killer = Killer(cluster, clock, runner.stop, args)
        with RssSampler(cluster, clock, args.rss_interval) as sampler:
            kill_thread = threading.Thread(target=killer.run, name="killer", daemon=True)
            kill_thread.start()
            records = runner.run()
            kill_thread.join(timeout=90)
            try:
                cluster.wait_all_up(timeout=120)
                all_up = True
            except TimeoutError:
                all_up = False
            duration = clock.now()
        for close in traffic.closers:
            close()
        try:
            restarts = cluster.status()
        except Exception as exc:  # the status is informative only
            restarts = {"error": str(exc)}
    verdicts = sampler.verdicts(args.warmup, args.judge_span, args.rss_bound_pct, args.rss_bound_mb)
    return SoakReport(args, records, killer.kills, verdicts, sampler.samples, all_up, restarts, duration,
                      errors=killer.errors)


def render(report: SoakReport) -> str:
    """The Markdown report."""
    args, records = report.options, report.records
    good = [r for r in records if r.good]
    rows = []
    for kind in sorted({r.kind for r in records}):
        mine = [r for r in records if r.kind == kind]
        ok = [r for r in mine if r.good and r.outcome == OK]
        stats = LatencyStats.from_seconds(r.latency for r in ok)
        rows.append([kind, sum(r.good for r in mine), len(ok), sum(r.lost for r in mine),
                     sum(1 for r in mine if r.attempts > 1), sum(not r.good for r in mine),
                     sum(1 for r in mine if not r.good and r.outcome == REJECTED),
                     fmt_ms(stats.median_ms), fmt_ms(stats.p95_ms)])
    rss_rows = [
        [v.role, v.pid, f"{v.baseline_mb:.0f}", f"{v.final_mb:.0f}", f"{v.growth_mb:+.1f}", f"{v.growth_pct:+.1f}%",
         f"{v.span_s:.0f}", {True: "ok", False: "**over**", None: "too short"}[v.within_bound]]
        for v in sorted(report.rss, key=lambda v: (v.role, v.pid))
    ]
    problems = report.problems()
    lines = [
        "# Soak",
        "",
        f"Model `{args.model}`, {args.size}×{args.size}, {args.steps} steps, {args.nodes} nodes, "
        f"{report.duration:.0f} s of traffic ({args.browsers} browser tabs, 1 gradio_client, {args.rest} REST; "
        f"{args.malformed:.0%} malformed), {len(report.kills)} worker SIGKILLs. {machine_summary()}.",
        "",
        f"**{'PASSED' if not problems else 'FAILED'}**: {len(good)} good requests, {len(report.lost)} lost; "
        f"{len(records) - len(good)} malformed, {len(report.badly_refused)} not refused readably; "
        f"all node parts UP at the end: {'yes' if report.all_up_at_end else 'no'}.",
        "",
        markdown_table(["client", "good", "ok", "lost", "retried", "malformed", "refused", "median ms", "p95 ms"],
                       rows),
        "",
        "Kills: " + ("; ".join(f"{k.t:.0f}s {k.node} worker pid {k.pid}{' (mid-job)' if k.was_busy else ''}"
                               for k in report.kills) or "none"),
        "",
        f"## Memory (RSS) — bound: growth ≤ {args.rss_bound_pct:g} % of the warmed-up RSS and ≤ "
        f"{args.rss_bound_mb:g} MB; warm-up {args.warmup:g} s after a process appears, judged over ≥ "
        f"{args.judge_span:g} s",
        "",
        markdown_table(["process", "pid", "warm MB", "final MB", "growth MB", "growth", "judged s", "verdict"],
                       rss_rows),
    ]
    if problems:
        lines += ["", "Problems:", ""] + [f"- {p}" for p in problems[:30]]
    lines += ["", f"Reproduce: `{args.reproduce}`"]
    return "\n".join(lines)


def plot(report: SoakReport):
    """Request latency over time (with kills) above the RSS of every process."""
    figure, axes = new_figure(2, 1, figsize=(13, 8), sharex=True)
    top, bottom = axes[0][0], axes[1][0]
    for kind in sorted({r.kind for r in report.records}):
        ok = [r for r in report.records if r.kind == kind and r.good and r.outcome == OK]
        top.scatter([r.start for r in ok], [r.latency for r in ok], s=8, alpha=0.6, label=kind)
    refused = [r for r in report.records if not r.good]
    top.scatter([r.start for r in refused], [r.latency for r in refused], s=8, marker="+", color="grey",
                label="malformed (refused)")
    lost = report.lost
    if lost:
        top.scatter([r.start for r in lost], [r.latency for r in lost], s=50, marker="x", color="red", label="lost")
    for kill in report.kills:
        for axis in (top, bottom):
            axis.axvline(kill.t, color="red", linestyle="--", linewidth=0.8)
    top.set_ylabel("latency (s)")
    top.set_title("Soak traffic (dashed: worker SIGKILL)")
    top.legend(fontsize=8, loc="upper left")
    top.grid(alpha=0.3)
    for pid in sorted({s.pid for s in report.rss_samples}):
        mine = [s for s in report.rss_samples if s.pid == pid]
        bottom.plot([s.t for s in mine], [s.rss / MB for s in mine], label=f"{mine[0].role} ({pid})", linewidth=1.2)
    bottom.set_ylabel("RSS (MB)")
    bottom.set_xlabel("seconds since the traffic started")
    bottom.legend(fontsize=7, ncol=3, loc="upper left")
    bottom.grid(alpha=0.3)
    figure.tight_layout()
    return figure


def main(argv: list[str] | None = None) -> int:
    """Run the soak, print and write its report; 0 when it passed."""
    args = parse_args(argv)
    prepare_run()
    report = run_soak(args)
    markdown = render(report)
    print(markdown)
    if not args.no_write:
        for path in write_results("soak", markdown, plot(report)):
            print(f"wrote {path}")
    return 0 if not report.problems() else 1


if __name__ == "__main__":
    sys.exit(main())
