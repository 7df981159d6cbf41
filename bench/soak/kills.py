"""The soak's worker kills: random workers SIGKILLed at random moments, only while the cluster is whole."""

from __future__ import annotations

import argparse
import random
import threading
import time
from dataclasses import dataclass

from bench.harness.launched_cluster import LaunchedCluster
from bench.harness.load import Clock


@dataclass(frozen=True)
class Kill:
    """A worker the soak killed."""

    t: float
    node: str
    pid: int
    was_busy: bool


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
