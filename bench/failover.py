"""Failover benchmark: a bounded load while a worker dies, a worker hangs, a web front dies, an OOM,
and then an operator's rolling restart restarts every node.

    python -m bench.failover                      # demo model, 4 clients, at most 480 s
    python -m bench.failover --clients 6 --seconds 600

It starts its own cluster (``launch.py``, 2 nodes, loopback, free ports) and runs a mixed
load through HAProxy's public frontend: REST ``/generate`` clients, one reused
``gradio_client.Client`` and one browser-protocol client (what the studio page does; these two
wait ``--think-time`` seconds between jobs, as a person does). While the load runs it causes
four failures and one planned restart, one after the other, each once the cluster is whole
again:

1. **worker SIGKILL**: the worker that is generating right now (its ``/readyz`` says busy),
   killed by its PID from the sidecar's ``/status``;
2. **worker hang**: the worker that is generating right now, SIGSTOPped (frozen: alive, answers
   nothing, uses no CPU); the sidecar must find it hung, kill it (``maint`` first, so "to DOWN"
   is the detection time) and restart it, and its job must finish on the other worker;
3. **web front SIGKILL**: the web front the reused ``gradio_client`` is stuck to;
4. **OOM**: a job with the fault-injection marker sent to the last worker, started with
   ``PORTRAIT_FAULT_OOM_AT_STEP`` and ``--max-consecutive-ooms 1``: it fails that job with
   507 (expected, not counted) and exits with ``EXIT_OOM`` for the sidecar to restart;
5. **rolling restart**: ``python -m balancer.ctl rolling-restart`` (``balancer.operations``):
   node by node, drained, restarted, back; its row's "back UP" is the whole operation.

A monitor polls HAProxy's runtime API (``show stat``) every 50 ms. For each failure it
reports the good requests that failed, the time until HAProxy marked the server
DOWN/MAINT, the time until it was back UP in rotation, and the latency of requests that
started during the recovery compared with before the first failure. The timeline
(``bench/results/failover.png``) plots every request's latency over time above each
server's HAProxy state. "In-flight extra s" is the slowest request in flight at the failure
minus the median before any failure: what the failure cost the job it hit. Bounded:
``--seconds`` caps the run, ``--max-requests`` each client.

"Back to full capacity" is the time from the failure until every server is UP again (both
workers serving). ``--standby`` gives every worker a warm standby (``balancer.standby``): the
benchmark waits until each is loaded before each failure, reports their resident memory, and
writes ``bench/results/failover-standby.md`` (and ``.png``) instead.

On a GPU machine with a real model (recovery includes model load time)::

    python -m bench.failover --model awportrait-z --steps 8 --size 1024 --threads 0 --seconds 600
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import psutil

from balancer.ctl import PASSWORD_ENV
from balancer.haproxy import status_is_out, status_is_up
from balancer.haproxy_config import PART_BACKENDS
from bench.cli import benchmark_parser, parse_benchmark_args, prepare_run
from bench.harness.clients import BrowserProtocolClient, CallFailed, GradioApiClient, Job, RestClient
from bench.harness.cluster import ClusterOptions, LaunchedCluster
from bench.harness.load import OK, Clock, LoadClient, LoadRunner, Poller, Record, timed_call
from bench.report import (
    LatencyStats,
    fmt_ms,
    fmt_seconds,
    machine_summary,
    markdown_table,
    new_figure,
    write_results,
)
from webui.contract import EXIT_OOM, FAULT_OOM_AT_STEP, FAULT_PROMPT_MARKER

logger = logging.getLogger("bench.failover")

PROMPT = "studio portrait, rim light, charcoal background"
OOM_MARKER = "[[bench-oom]]"
SETTLE = 0.5
"""The rolling restart's ``--settle`` (seconds of no request before a web front switches)."""
STATE_COLOURS = {"UP": "#4caf50", "DOWN": "#e53935", "MAINT": "#9e9e9e"}
TRANSITION_COLOUR = "#ffb300"


@dataclass(frozen=True)
class StateSample:
    """HAProxy's status of one server at one moment."""

    t: float
    server: str
    """``backend/node``"""
    status: str


class StateMonitor(Poller):
    """Polls HAProxy's server states in a thread; keeps every change."""

    def __init__(self, cluster: LaunchedCluster, clock: Clock, interval: float = 0.05) -> None:
        super().__init__(interval, "haproxy-monitor")
        self.cluster = cluster
        self.clock = clock
        self.samples: list[StateSample] = []
        self.current: dict[str, str] = {}

    def poll(self) -> None:
        """Record the servers whose status changed since the last poll."""
        try:
            servers = self.cluster.servers()
        except OSError:
            return
        now = self.clock.now()
        for server in servers:
            key = f"{server.backend}/{server.server}"
            if self.current.get(key) != server.status:
                self.current[key] = server.status
                self.samples.append(StateSample(now, key, server.status))

    def first_change(self, server: str, after: float, predicate: Callable[[str], bool]) -> float | None:
        """Time of the first recorded status of ``server`` after ``after`` that matches."""
        return next((s.t for s in self.samples if s.server == server and s.t >= after and predicate(s.status)), None)

    def full_capacity(self, after: float) -> float | None:
        """Time of the first recorded change after ``after`` that left every server UP."""
        states: dict[str, str] = {}
        for sample in self.samples:
            states[sample.server] = sample.status
            if sample.t >= after and all(status_is_up(status) for status in states.values()):
                return sample.t
        return None

    def wait_for(self, server: str, after: float, predicate: Callable[[str], bool], timeout: float) -> float | None:
        """Block until ``first_change`` finds one (or ``timeout`` passes)."""
        return self._wait(lambda: self.first_change(server, after, predicate), timeout)

    def wait_for_full_capacity(self, after: float, timeout: float) -> float | None:
        """Block until ``full_capacity`` finds one (or ``timeout`` passes)."""
        return self._wait(lambda: self.full_capacity(after), timeout)

    def _wait(self, found: Callable[[], float | None], timeout: float) -> float | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (at := found()) is not None:
                return at
            time.sleep(self.interval)
        return None


@dataclass
class Failure:
    """One failure the benchmark caused, and what the cluster did about it."""

    name: str
    server: str
    at: float
    """When the failure happened (the kill, or the OOM answer), on the run's clock."""
    watch_from: float | None = None
    """Look for the server going out of rotation from here (default ``at``)."""
    down_at: float | None = None
    up_at: float | None = None
    full_at: float | None = None
    """When every server was UP again after it."""
    note: str = ""
    expected_errors: list[Record] = field(default_factory=list)
    check_cause: tuple[str, str] | None = None
    """(node, part) whose cause of death the sidecar should report afterwards."""
    cause: str = ""
    """The sidecar's last cause and detail for ``check_cause``."""

    @property
    def time_to_down(self) -> float | None:
        """Seconds from the failure to HAProxy taking the server out of rotation (0 if it was first)."""
        return None if self.down_at is None else max(0.0, self.down_at - self.at)

    @property
    def time_to_up(self) -> float | None:
        """Seconds from the failure to the server being back UP in rotation."""
        return None if self.up_at is None else self.up_at - self.at

    @property
    def time_to_full(self) -> float | None:
        """Seconds from the failure to every server UP: back to full capacity."""
        return None if self.full_at is None else self.full_at - self.at


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line flags (see the module docstring)."""
    parser = benchmark_parser("python -m bench.failover", __doc__, steps=8, size=512)
    parser.add_argument("--clients", type=int, default=4,
                        help="Concurrent clients: 1 gradio_client, 1 browser-protocol, the rest REST.")
    parser.add_argument("--seconds", type=float, default=480.0, help="Longest run in seconds.")
    parser.add_argument("--think-time", type=float, default=10.0,
                        help="Seconds the gradio_client and browser clients wait between two jobs (a person looking at "
                        "the result; a drained web front needs its sticky clients idle at once to switch).")
    parser.add_argument("--max-requests", type=int, default=300, help="Most requests per client.")
    parser.add_argument("--settle", type=float, default=6.0,
                        help="Seconds of normal load before the first failure and after each recovery.")
    parser.add_argument("--standby", action="store_true",
                        help="Give every worker a warm standby (standby: true), loaded before each failure.")
    parser.add_argument("--recovery-timeout", type=float, default=120.0,
                        help="Longest wait for a node to come back before giving up on the rest.")
    return parse_benchmark_args(parser, argv)


def build_clients(cluster: LaunchedCluster, clock: Clock, job: Job, count: int, max_requests: int,
                  closers: list[Callable[[], None]], think_time: float = 0.0) -> list[LoadClient]:
    """The load: one reused gradio_client, one browser-protocol tab (each pausing ``think_time`` s
    between jobs), the rest REST (no pause)."""
    def numbered(index: int, i: int) -> Job:
        return Job(job.prompt, job.steps, job.width, job.height, job.seed + 10_000 * index + i, job.guidance)

    clients = []
    for index in range(count):
        if index == 0:
            kind, client = "gradio_client", GradioApiClient(cluster.public_url + "/")
        elif index == 1:
            kind, client = "browser", BrowserProtocolClient(cluster.public_url)
        else:
            kind, client = "rest", RestClient(cluster.public_url)
        closers.append(client.close)

        def call(i: int, index: int = index, kind: str = kind, client=client) -> Record:
            return timed_call(clock, f"{kind}-{index}", kind, True, lambda: client.generate(numbered(index, i)))

        pause = think_time if kind != "rest" else 0.0
        clients.append(LoadClient(f"{kind}-{index}", call, max_requests=max_requests, pause=pause))
    return clients


class FailureScript:
    """Causes the failures one after the other while the load runs (in its own thread)."""

    def __init__(self, cluster: LaunchedCluster, monitor: StateMonitor, clock: Clock, runner: LoadRunner,
                 job: Job, args: argparse.Namespace) -> None:
        self.cluster = cluster
        self.monitor = monitor
        self.clock = clock
        self.runner = runner
        self.job = job
        self.args = args
        self.failures: list[Failure] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        """Worker kill, web-front kill, OOM, rolling restart; then stop the load once the cluster is whole."""
        try:
            self.wait_for_baseline()
            for step in (self.kill_busy_worker, self.hang_busy_worker, self.kill_sticky_web, self.oom_worker,
                         self.rolling_restart):
                if self.runner.stop.wait(self.args.settle):
                    return
                if self.args.standby:
                    self.cluster.wait_standbys(self.args.recovery_timeout)
                failure = step()
                self.failures.append(failure)
                if failure.up_at is None:
                    self.await_recovery(failure)
                if failure.up_at is None:
                    return
            self.runner.stop.wait(self.args.settle)
        except BaseException as exc:  # reported by main after the load stops
            self.error = exc
        finally:
            self.runner.stop.set()

    def wait_for_baseline(self) -> None:
        """Let every client finish a request before the first failure (bounded)."""
        deadline = time.monotonic() + self.args.recovery_timeout
        while time.monotonic() < deadline and not self.runner.stop.is_set():
            if all(any(r.outcome == OK for r in c.records) for c in self.runner.clients):
                return
            self.runner.stop.wait(0.2)

    def await_recovery(self, failure: Failure) -> None:
        """Fill in when the failed server went out of rotation and came back UP."""
        timeout = self.args.recovery_timeout
        watch_from = failure.at if failure.watch_from is None else failure.watch_from
        failure.down_at = self.monitor.wait_for(failure.server, watch_from, status_is_out, timeout)
        if failure.down_at is not None:
            failure.up_at = self.monitor.wait_for(failure.server, failure.down_at, status_is_up, timeout)
            failure.full_at = self.monitor.wait_for_full_capacity(failure.down_at, timeout)
        logger.info("%s: out of rotation after %s s, back UP after %s s, full capacity after %s s", failure.name,
                    fmt_seconds(failure.time_to_down), fmt_seconds(failure.time_to_up),
                    fmt_seconds(failure.time_to_full))
        if failure.check_cause is not None:
            entry = self.cluster.part_status(*failure.check_cause)
            failure.cause = f"{entry['last_cause']}: {entry['last_detail']}"

    def kill_busy_worker(self) -> Failure:
        """SIGKILL the worker that is generating right now."""
        node = (self.cluster.busy_workers(timeout=30) or self.cluster.node_names)[0]
        at = self.clock.now()
        pid = self.cluster.kill(node, "worker")
        server = f"{PART_BACKENDS['worker']}/{node}"
        return Failure("worker SIGKILL", server, at, note=f"{node} worker, pid {pid}, mid-job")

    def hang_busy_worker(self) -> Failure:
        """SIGSTOP the worker that is generating right now; the sidecar has to find it hung."""
        node = (self.cluster.busy_workers(timeout=30) or self.cluster.node_names)[0]
        pid = self.cluster.pid(node, "worker")
        at = self.clock.now()
        os.kill(pid, signal.SIGSTOP)
        logger.info("SIGSTOP %s/worker (pid %d)", node, pid)
        return Failure("worker hang (SIGSTOP)", f"{PART_BACKENDS['worker']}/{node}", at,
                       note=f"{node} worker, pid {pid}, mid-job", check_cause=(node, "worker"))

    def kill_sticky_web(self) -> Failure:
        """SIGKILL the web front the reused gradio_client last ran on."""
        gradio_records = [r for r in self.runner.clients[0].records if r.web_node]
        node = gradio_records[-1].web_node if gradio_records else self.cluster.node_names[0]
        at = self.clock.now()
        pid = self.cluster.kill(node, "web")
        return Failure("web front SIGKILL", f"{PART_BACKENDS['web']}/{node}", at, note=f"{node} web front, pid {pid}")

    def oom_worker(self) -> Failure:
        """Send the OOM marker job straight to the last worker; it answers 507 and exits.

        The job goes around HAProxy, which would not count it: the node is drained first (``ctl drain``)
        so that HAProxy sends it nothing meanwhile, the job is sent again while the worker is still busy
        with one of the load's (503), and the node is put back (``ctl ready``) once the 507 came.
        """
        node = self.cluster.node_names[-1]
        self.ctl("drain", node)
        rest = RestClient(self.cluster.part_url(node, "worker"), headers=self.cluster.internal_headers)
        marked = Job(f"{OOM_MARKER} {self.job.prompt}", self.job.steps, self.job.width, self.job.height, 7)
        deadline = time.monotonic() + self.args.recovery_timeout
        while True:
            record = timed_call(self.clock, "oom-trigger", "oom", False, lambda: rest.generate(marked), ["memory"])
            if not record.detail.startswith("HTTP 503") or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        rest.close()
        self.ctl("ready", node)
        failure = Failure("OOM exit", f"{PART_BACKENDS['worker']}/{node}", at=record.end, watch_from=record.start,
                          note=f"{node} worker: OOM at step 2 → 507, then exit {EXIT_OOM}")
        failure.expected_errors.append(record)
        return failure


    def ctl(self, *args: str) -> None:
        """``python -m balancer.ctl ARGS`` against this cluster's sidecar; raises when it fails."""
        env = {**os.environ, PASSWORD_ENV: self.cluster.spec.stats.password.get_secret_value()}
        subprocess.run([sys.executable, "-m", "balancer.ctl", *args, "--sidecar", self.cluster.sidecar_url],
                       capture_output=True, text=True, env=env, timeout=60, check=True)

    def rolling_restart(self) -> Failure:
        """``python -m balancer.ctl rolling-restart``, followed to its end (the cluster's whole again then)."""
        self.cluster.wait_all_ready(self.args.recovery_timeout)
        before = {(node, part): self.cluster.pid(node, part) for node in self.cluster.node_names
                  for part in PART_BACKENDS}
        at = self.clock.now()
        env = {**os.environ, PASSWORD_ENV: self.cluster.spec.stats.password.get_secret_value()}
        result = subprocess.run(
            [sys.executable, "-m", "balancer.ctl", "rolling-restart", "--json", "--sidecar", self.cluster.sidecar_url,
             "--drain-timeout", str(self.args.recovery_timeout), "--settle", str(SETTLE),
             "--timeout", str(self.args.seconds)],
            capture_output=True, text=True, env=env, timeout=self.args.seconds + 30)
        end = self.clock.now()
        if result.returncode != 0:
            note = f"FAILED (exit {result.returncode}): {result.stderr.strip()[:300]}"
            return Failure("rolling restart", "every node", at, up_at=end, note=note)
        report = json.loads(result.stdout)
        self.cluster.wait_all_ready(self.args.recovery_timeout)
        renewed = all(self.cluster.pid(*key) != pid for key, pid in before.items())
        drained = ", ".join(f"{node} {entry.get('drained_s', 0):.1f} s" for node, entry in report["nodes"].items())
        note = (f"{len(report['nodes'])} nodes one at a time, every pid new: {'yes' if renewed else 'NO'}; "
                f"waits for a quiet moment (settle {SETTLE:g} s): {drained}")
        return Failure("rolling restart", "every node", at, up_at=end, note=note)


def summarize(records: list[Record], failures: list[Failure]) -> list[list[object]]:
    """One table row per failure: failed good requests and latency during its recovery."""
    first = failures[0].at if failures else float("inf")
    baseline = LatencyStats.from_seconds(r.latency for r in records if r.end < first and r.outcome == OK)
    rows = []
    for failure in failures:
        end = failure.up_at if failure.up_at is not None else max((r.end for r in records), default=failure.at)
        window = [r for r in records if failure.at <= r.start <= end or r.start <= failure.at <= r.end]
        during = LatencyStats.from_seconds(r.latency for r in window if r.outcome == OK)
        lost = [r for r in records if r.lost and failure.at <= r.end <= end]  # failed while it recovered
        retried = sum(1 for r in window if r.attempts > 1)
        hit = [r.latency for r in window if r.start <= failure.at <= r.end and r.outcome == OK]
        extra = max(hit) - baseline.median_ms / 1000 if hit and baseline.count else None
        rows.append([
            failure.name, failure.note, len(window), len(lost), retried,
            fmt_seconds(failure.time_to_down), fmt_seconds(failure.time_to_up), fmt_seconds(failure.time_to_full),
            fmt_seconds(extra),
            fmt_ms(during.median_ms), fmt_ms(during.p95_ms), fmt_ms(during.max_ms),
        ])
    rows.insert(0, ["before any failure", "", sum(1 for r in records if r.end < first),
                    sum(1 for r in records if r.end < first and r.lost), 0, "–", "–", "–", "–",
                    fmt_ms(baseline.median_ms), fmt_ms(baseline.p95_ms), fmt_ms(baseline.max_ms)])
    return rows


def explain(record: Record, records: list[Record], failures: list[Failure]) -> str:
    """Say so when a failed request was streaming through a web front that was killed.

    A Gradio event stream lives on one web front and cannot be replayed by a proxy once it has
    started; what the cluster promises is that the client's *next* calls work. The request's
    front is taken to be the one that served the same client's previous call (sticky).
    """
    mine = [r for r in records if r.client == record.client]
    before = [r for r in mine if r.end <= record.start and r.web_node]
    after = [r for r in mine if r.start >= record.end]
    for failure in failures:
        killed_front = before and failure.server == f"{PART_BACKENDS['web']}/{before[-1].web_node}"
        if killed_front and record.start <= failure.at <= record.end + 1.0:
            next_ok = bool(after) and after[0].outcome == OK
            return (f" — in flight on the web front killed at {failure.at:.1f} s (its event stream died with it); "
                    f"this client's next call {'succeeded' if next_ok else 'did NOT succeed'}")
    return ""


def standby_memory(cluster: LaunchedCluster, timeout: float) -> str:
    """Once every standby is loaded: the resident memory of each standby and of each worker, in words."""
    standbys = cluster.wait_standbys(timeout)
    mib = 2**20
    parts = [f"{node}: standby {psutil.Process(entry['pid']).memory_info().rss / mib:.0f} MiB RSS, worker "
             f"{psutil.Process(cluster.pid(node, 'worker')).memory_info().rss / mib:.0f} MiB"
             for node, entry in standbys.items()]
    return "Warm standby per worker (loaded, waiting): " + "; ".join(parts) + "."


def render(args: argparse.Namespace, records: list[Record], failures: list[Failure], duration: float,
           memory: str = "") -> str:
    """The Markdown report (``memory``: the standbys' line, with ``--standby``)."""
    lost = [r for r in records if r.lost]
    kinds = sorted({r.kind for r in records})
    per_kind = [[kind, sum(1 for r in records if r.kind == kind),
                 sum(1 for r in records if r.kind == kind and r.lost)] for kind in kinds]
    expected = [r for f in failures for r in f.expected_errors]
    lines = [
        "# Failover benchmark",
        "",
        f"Model `{args.model}`, {args.size}×{args.size}, {args.steps} steps, {args.nodes} nodes, "
        f"{args.clients} concurrent clients for {duration:.0f} s, "
        f"{'with a warm standby per worker' if args.standby else 'no standby workers'}. {machine_summary()}.",
        "",
        *([memory, ""] if memory else []),
        f"**{len(records)} requests, {len(lost)} failed** (good requests that got no image). "
        f"The OOM trigger job got: {'; '.join(r.detail[:120] for r in expected) or '–'}.",
        "",
        markdown_table(
            ["phase", "what", "requests", "failed", "retried", "to DOWN s", "back UP s", "full capacity s",
             "in-flight extra s",
             "median ms", "p95 ms", "max ms"],
            summarize(records, failures),
        ),
        "",
        "Requests are counted in a phase when they overlap the time from the failure to the server "
        "being back UP in HAProxy (for the rolling restart: from its start to its end), failed ones when they "
        "failed within that time; \"full capacity\" = every server UP again; \"retried\" = finished on "
        "another worker after a web front retry "
        "(REST jobs are replayed by HAProxy itself, invisibly). Failures at: "
        + ", ".join(f"{f.name} {f.at:.1f} s" for f in failures) + ".",
        "",
        markdown_table(["client", "requests", "failed"], per_kind),
    ]
    causes = [f"- {f.name}: the sidecar recorded `{f.cause}`" for f in failures if f.cause]
    if causes:
        lines += ["", *causes]
    if lost:
        lines += ["", "Failed requests (run clock, seconds):", ""]
        lines += [f"- {r.client}, sent {r.start:.1f} s, failed {r.end:.1f} s: {r.detail}{explain(r, records, failures)}"
                  for r in lost[:20]]
    lines += ["", f"Reproduce: `{args.reproduce}`"]
    return "\n".join(lines)


def plot(records: list[Record], failures: list[Failure], samples: list[StateSample], duration: float):
    """Latency of every request over time, above each server's HAProxy state."""
    servers = sorted({s.server for s in samples})
    figure, axes = new_figure(2, 1, figsize=(13, 7), sharex=True,
                              gridspec_kw={"height_ratios": [3, max(1, len(servers) * 0.35)]})
    top, bottom = axes[0][0], axes[1][0]
    markers = {"rest": "o", "gradio_client": "s", "browser": "^"}
    for kind in sorted({r.kind for r in records if r.good}):
        ok = [r for r in records if r.kind == kind and r.outcome == OK]
        top.scatter([r.start for r in ok], [r.latency for r in ok], s=14, marker=markers.get(kind, "o"),
                    label=kind, alpha=0.75)
    lost = [r for r in records if r.lost]
    if lost:
        top.scatter([r.start for r in lost], [r.latency for r in lost], s=60, marker="x", color="red",
                    label="failed")
    for failure in failures:
        for axis in (top, bottom):
            axis.axvline(failure.at, color="black", linestyle="--", linewidth=0.9)
        top.annotate(failure.name, (failure.at, 1.0), xycoords=("data", "axes fraction"), rotation=90,
                     va="top", ha="right", fontsize=8)
    top.set_ylabel("latency (s), by start time")
    top.set_title("Requests during failures")
    top.legend(loc="upper left", fontsize=8)
    top.grid(alpha=0.3)
    for row, server in enumerate(servers):
        changes = [s for s in samples if s.server == server]
        for current, following in zip(changes, changes[1:] + [None], strict=True):
            end = following.t if following else duration
            colour = STATE_COLOURS.get(current.status, TRANSITION_COLOUR)
            bottom.broken_barh([(current.t, end - current.t)], (row - 0.4, 0.8), color=colour)
    bottom.set_yticks(range(len(servers)), servers)
    bottom.set_xlabel("seconds since the load started")
    bottom.set_title("HAProxy state: green UP, red DOWN, grey MAINT, amber in transition", fontsize=9)
    bottom.set_xlim(0, duration)
    figure.tight_layout()
    return figure


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark, print the table, write the results files."""
    args = parse_args(argv)
    if args.clients < 3:
        raise SystemExit("--clients: at least 3 (gradio_client, browser, REST)")
    prepare_run()
    options = ClusterOptions.from_args(args)
    # Every worker gets the fault switch, armed only by the marker prompt that only the
    # trigger job carries; one OOM makes a worker exit with EXIT_OOM.
    options.worker_env = {FAULT_OOM_AT_STEP: "2", FAULT_PROMPT_MARKER: OOM_MARKER}
    options.worker_args = ["--max-consecutive-ooms", "1"]
    options.standby = args.standby
    job = Job(PROMPT, args.steps, args.size, args.size, seed=1)
    closers: list[Callable[[], None]] = []
    with LaunchedCluster(options, name="failover") as cluster:
        memory = standby_memory(cluster, args.start_timeout) if args.standby else ""
        clock = Clock()
        runner = LoadRunner(build_clients(cluster, clock, job, args.clients, args.max_requests, closers,
                                          args.think_time), args.seconds)
        with StateMonitor(cluster, clock) as monitor:
            script = FailureScript(cluster, monitor, clock, runner, job, args)
            thread = threading.Thread(target=script.run, name="failures", daemon=True)
            thread.start()
            records = runner.run()
            thread.join(timeout=args.recovery_timeout)
            duration = clock.now()
        for close in closers:
            try:
                close()
            except CallFailed:
                pass
    if script.error is not None:
        raise script.error
    markdown = render(args, records, script.failures, duration, memory)
    print(markdown)
    name = "failover-standby" if args.standby else "failover"
    for path in write_results(name, markdown, plot(records, script.failures, monitor.samples, duration)):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
