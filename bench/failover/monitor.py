"""HAProxy's view of every server, sampled through the run: the state lanes of the failover plot."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from balancer.haproxy.process import status_is_up
from bench.harness.launched_cluster import LaunchedCluster
from bench.harness.load import Clock, Poller


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
