"""The failures the failover benchmark causes, one after another under load, and when each one recovered."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

from balancer.cli.ctl import PASSWORD_ENV
from balancer.haproxy.config import PART_BACKENDS
from balancer.haproxy.process import status_is_out, status_is_up
from bench.failover.monitor import StateMonitor
from bench.harness.generation import Job
from bench.harness.launched_cluster import LaunchedCluster
from bench.harness.load import OK, Clock, LoadRunner, Record, timed_call
from bench.harness.rest_client import RestClient
from bench.report import (
    fmt_seconds,
)
from webui.contract import EXIT_OOM

logger = logging.getLogger(__name__)


OOM_MARKER = "[[bench-oom]]"
SETTLE = 0.5
"""The rolling restart's ``--settle`` (seconds of no request before a web front switches)."""


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
        """``python -m balancer.cli ARGS`` against this cluster's sidecar; raises when it fails."""
        env = {**os.environ, PASSWORD_ENV: self.cluster.spec.stats.password.get_secret_value()}
        subprocess.run([sys.executable, "-m", "balancer.cli", *args, "--sidecar", self.cluster.sidecar_url],
                       capture_output=True, text=True, env=env, timeout=60, check=True)

    def rolling_restart(self) -> Failure:
        """``python -m balancer.cli rolling-restart``, followed to its end (the cluster's whole again then)."""
        self.cluster.wait_all_ready(self.args.recovery_timeout)
        before = {(node, part): self.cluster.pid(node, part) for node in self.cluster.node_names
                  for part in PART_BACKENDS}
        at = self.clock.now()
        env = {**os.environ, PASSWORD_ENV: self.cluster.spec.stats.password.get_secret_value()}
        result = subprocess.run(
            [sys.executable, "-m", "balancer.cli", "rolling-restart", "--json", "--sidecar", self.cluster.sidecar_url,
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
