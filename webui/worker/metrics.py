"""Prometheus metrics of one worker (``GET /metrics``), in a registry of its own.

Every ``WorkerMetrics`` has its own ``CollectorRegistry``, so several apps can live in one
process (tests) without sharing counters. What is exported:

* ``portrait_worker_requests_total{endpoint,outcome}`` and
  ``portrait_worker_request_duration_seconds{endpoint}``: every HTTP request,
* ``portrait_worker_images_total``, ``portrait_worker_denoising_steps_total``,
  ``portrait_worker_steps_per_second`` (histogram, one sample per finished job),
* ``portrait_worker_generating_seconds_total``: time the generation thread spent generating,
  the running job's time so far included (read when scraped: ``GeneratingClock``); its rate is
  the GPU's duty cycle (PNG encoding runs in another thread),
* ``portrait_worker_out_of_memory_total``,
* ``portrait_worker_queue_depth``, ``portrait_worker_busy``, ``portrait_worker_ready``
  (read when scraped),
* ``portrait_worker_gpu_memory_{allocated,reserved,max_allocated}_bytes`` when the
  pipeline runs on CUDA (``torch.cuda.memory_allocated`` etc., read when scraped),
* ``portrait_worker_info{node,model,family,device,attention}``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from webui.worker.pipelines.base import loaded_torch

LATENCY_BUCKETS = (0.005, 0.025, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300)
STEPS_PER_SECOND_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128)


class CudaMemoryCollector(Collector):
    """GPU memory gauges read from ``torch.cuda`` at scrape time (nothing when not on CUDA)."""

    def __init__(self, cuda_device: Callable[[], int | None]) -> None:
        self._cuda_device = cuda_device

    def collect(self) -> Iterator[Metric]:
        device, torch = self._cuda_device(), loaded_torch()
        if device is None or torch is None:
            return

        readings = {
            "allocated": ("Bytes of GPU memory held by tensors.", torch.cuda.memory_allocated),
            "reserved": ("Bytes of GPU memory reserved by the caching allocator.", torch.cuda.memory_reserved),
            "max_allocated": ("Peak bytes of GPU memory held by tensors.", torch.cuda.max_memory_allocated),
        }
        for name, (documentation, read) in readings.items():
            gauge = GaugeMetricFamily(f"portrait_worker_gpu_memory_{name}_bytes", documentation, labels=["device"])
            gauge.add_metric([str(device)], float(read(device)))
            yield gauge


class GeneratingClock(Collector):
    """Seconds spent generating, the running job's time so far included, as a counter read at scrape time.

    A counter raised only when a job ends moves in steps of a job's length, so its rate over a window
    is off by up to a job per window edge; this one moves with the wall clock while a job runs.
    """

    NAME = "portrait_worker_generating_seconds"

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._done = 0.0
        self._since: float | None = None

    def begin(self) -> None:
        """A job starts generating (the generation thread runs one at a time)."""
        with self._lock:
            self._since = self._clock()

    def end(self) -> None:
        """The running job stopped generating (finished, failed or cancelled)."""
        with self._lock:
            if self._since is not None:
                self._done += self._clock() - self._since
                self._since = None

    def seconds(self) -> float:
        """Seconds generated so far."""
        with self._lock:
            return self._done + (self._clock() - self._since if self._since is not None else 0.0)

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(self.NAME, "Seconds the generation thread spent generating for clients, the "
                                  "running job included (its duty cycle: the rate of this).", value=self.seconds())


class WorkerMetrics:
    """The worker's counters and histograms; ``track`` adds the gauges read at scrape time."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "portrait_worker_requests", "HTTP requests by endpoint and outcome.", ["endpoint", "outcome"],
            registry=self.registry,
        )
        self.request_duration = Histogram(
            "portrait_worker_request_duration_seconds", "HTTP request duration (to the last byte).", ["endpoint"],
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.images = Counter("portrait_worker_images", "Images generated for clients.", registry=self.registry)
        self.steps = Counter(
            "portrait_worker_denoising_steps", "Denoising steps run for clients (cancelled jobs included).",
            registry=self.registry,
        )
        self.steps_per_second = Histogram(
            "portrait_worker_steps_per_second", "Denoising speed of each finished job (steps x images / s).",
            buckets=STEPS_PER_SECOND_BUCKETS, registry=self.registry,
        )
        self.generating = GeneratingClock()
        self.registry.register(self.generating)
        self.out_of_memory = Counter(
            "portrait_worker_out_of_memory", "Jobs that ran out of memory.", registry=self.registry
        )
        self.info = Info("portrait_worker", "Which model this worker serves, and how.", registry=self.registry)

    def track(
        self,
        queue_depth: Callable[[], int],
        busy: Callable[[], bool],
        ready: Callable[[], bool],
        cuda_device: Callable[[], int | None],
    ) -> None:
        """Export the worker's state; each callable is read when ``/metrics`` is scraped."""
        for name, documentation, read in (
            ("portrait_worker_queue_depth", "Jobs waiting behind the running one.", queue_depth),
            ("portrait_worker_busy", "1 while a generation runs.", busy),
            ("portrait_worker_ready", "1 when the worker takes jobs (as /readyz says).", ready),
        ):
            Gauge(name, documentation, registry=self.registry).set_function(lambda read=read: float(read()))
        self.registry.register(CudaMemoryCollector(cuda_device))

    def observe_request(self, endpoint: str, outcome: str, seconds: float) -> None:
        """Count one finished HTTP request."""
        self.requests.labels(endpoint=endpoint, outcome=outcome).inc()
        self.request_duration.labels(endpoint=endpoint).observe(seconds)

    def render(self) -> tuple[bytes, str]:
        """The text exposition format and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
