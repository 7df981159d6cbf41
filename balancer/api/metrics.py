"""The sidecar's Prometheus metrics (``GET /metrics``), in a registry of their own: each part's state, deaths,
restarts and uptime, the GPU gauges, and the floating address's VRRP state."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client import Counter as PromCounter
from prometheus_client import Enum as PromEnum
from prometheus_client.core import GaugeMetricFamily, Metric

from balancer.supervision.causes import Death, DeathCause
from balancer.supervision.state import PartState, PartStatus
from webui.contract import VRRP_STATES

GpuFacts = dict[str, dict[str, object]]
"""GPU index -> what NVML reports about it (``balancer.config.gpus.gpu_facts``)."""

GPU_GAUGES = {
    "memory_used_bytes": ("portrait_gpu_memory_used_bytes", "GPU memory in use (NVML), all processes."),
    "memory_total_bytes": ("portrait_gpu_memory_total_bytes", "Total GPU memory (NVML)."),
    "utilization_percent": ("portrait_gpu_utilization_percent", "Share of the last sample period the GPU was busy."),
    "temperature_celsius": ("portrait_gpu_temperature_celsius", "GPU core temperature."),
}
"""Fact of ``gpu_facts`` -> (gauge name, help) in ``/metrics``."""


class GpuCollector:
    """The GPU gauges, from the facts last read (``update``): no family at all without GPUs, and a
    GPU that stops reporting a fact loses that series rather than keeping a stale value."""

    def __init__(self) -> None:
        self.facts: GpuFacts = {}

    def update(self, facts: GpuFacts) -> None:
        """The facts the next scrape shows."""
        self.facts = facts

    def collect(self) -> Iterator[Metric]:
        for fact, (name, documentation) in GPU_GAUGES.items():
            samples = [(gpu, entry[fact]) for gpu, entry in self.facts.items() if fact in entry]
            if samples:
                family = GaugeMetricFamily(name, documentation, labels=["gpu"])
                for gpu, value in samples:
                    family.add_metric([gpu], float(value))
                yield family


@dataclass(frozen=True)
class FloatingView:
    """A balancer's share of the floating address: the address, and its VRRP state read when asked."""

    address: str
    state: Callable[[], str | None]
    """MASTER, BACKUP, FAULT or STOP; None when unknown (``KeepalivedChild.vrrp_state``)."""

    def document(self) -> dict:
        """The ``floating`` entry of ``/status``."""
        return {"address": self.address, "state": self.state()}


class VrrpCollector:
    """The gauge ``portrait_sidecar_vrrp_state``, read at scrape time (no series without a floating address)."""

    def __init__(self) -> None:
        self.floating: FloatingView | None = None

    def collect(self) -> Iterator[Metric]:
        if self.floating is None:
            return
        current = self.floating.state()
        family = GaugeMetricFamily("portrait_sidecar_vrrp_state", "1 for this balancer's VRRP state (keepalived; "
                                   "MASTER holds the floating address), 0 for the others.", labels=["state"])
        for state in VRRP_STATES:
            family.add_metric([state], 1.0 if state == current else 0.0)
        yield family


class SidecarMetrics:
    """The sidecar's Prometheus metrics, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.gpus = GpuCollector()
        self.registry.register(self.gpus)
        self.vrrp = VrrpCollector()
        self.registry.register(self.vrrp)
        labels = ["node", "part"]
        self.deaths = PromCounter(
            "portrait_sidecar_deaths", "Deaths of supervised processes, by cause.", [*labels, "cause"],
            registry=self.registry,
        )
        self.restarts = PromCounter(
            "portrait_sidecar_restarts", "Restarts of supervised processes.", labels, registry=self.registry
        )
        self.state = PromEnum(
            "portrait_sidecar_part_state", "Current state of each supervised process.", labels,
            states=[state.value for state in PartState], registry=self.registry,
        )
        self.crash_looped = Gauge(
            "portrait_sidecar_crash_looped", "1 when a process crash-looped and is no longer restarted.", labels,
            registry=self.registry,
        )
        self.uptime = Gauge(
            "portrait_sidecar_uptime_seconds", "Seconds since the current process started.", labels,
            registry=self.registry,
        )

    def register(self, status: PartStatus) -> None:
        """Create the label set of a process so that it shows up before anything happens."""
        self.restarts.labels(status.node, status.part)
        self.crash_looped.labels(status.node, status.part).set(0)
        for cause in DeathCause:
            self.deaths.labels(status.node, status.part, cause.value)
        self.set_state(status)

    def set_state(self, status: PartStatus) -> None:
        """Mirror a state change."""
        self.state.labels(status.node, status.part).state(status.state.value)
        self.crash_looped.labels(status.node, status.part).set(1 if status.crash_looped else 0)

    def record_death(self, status: PartStatus, death: Death) -> None:
        """Count a death by cause."""
        self.deaths.labels(status.node, status.part, death.cause.value).inc()

    def record_restart(self, status: PartStatus) -> None:
        """Count a restart."""
        self.restarts.labels(status.node, status.part).inc()

    def render(self, statuses: list[PartStatus], now: float, gpus: GpuFacts | None = None) -> bytes:
        """The exposition text, uptimes refreshed, GPU gauges from ``gpus`` (none when empty)."""
        for status in statuses:
            uptime = now - status.started_at if status.started_at is not None and status.pid else 0
            self.uptime.labels(status.node, status.part).set(uptime)
        self.gpus.update(gpus or {})
        return generate_latest(self.registry)
