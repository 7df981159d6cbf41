"""The soak's memory check: every cluster process's RSS, sampled, and each one's growth after warm-up judged.

A process is judged when it ran at least ``judge_span`` seconds after its warm-up (``warmup`` seconds after it
first appeared): its growth is the median of its last 3 samples minus the median of its first 3 after warm-up,
within the bound when at most ``bound_pct`` % of its warmed-up RSS and at most ``bound_mb`` MB.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

import psutil

from bench.harness.launched_cluster import LaunchedCluster
from bench.harness.load import Clock, Poller

MB = 1024 * 1024


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
