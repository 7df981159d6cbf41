"""GPU XID errors as NVML reports them, for the sidecar's ``/metrics``.

An XID is the driver's code for a GPU fault (79: fallen off the bus, 48: uncorrectable memory error, ...).
``XidWatcher`` registers for NVML's ``nvmlEventTypeXidCriticalError`` on every GPU and waits for events in
one thread of its own (``nvmlEventSetWait_v2`` with a timeout, so that it stops soon after ``stop``). It is
also the Prometheus collector of ``portrait_gpu_xid_errors_total{gpu}`` (from 0 on each watched GPU) and
``portrait_gpu_last_xid{gpu}`` (once a GPU had one). No GPU, no NVIDIA driver, or a binding or GPU
without the event API: no series, one log line, and the sidecar runs on.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from types import ModuleType

import pynvml
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

logger = logging.getLogger(__name__)

WAIT_MS = 1000
"""How long one wait for an event lasts: the most ``stop`` waits for the thread."""


class XidWatcher:
    """Counts each GPU's XID errors and keeps its last code, from NVML's events, in one thread."""

    def __init__(self, nvml: ModuleType | object = pynvml, wait_ms: int = WAIT_MS) -> None:
        self.nvml, self.wait_ms = nvml, wait_ms
        self.errors: dict[str, int] = {}
        """GPU index (as a string) -> XID errors since the sidecar started; a key per watched GPU."""
        self.last: dict[str, int] = {}
        """GPU index -> the code of its last XID error."""
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> bool:
        """Register for XID events on every GPU and start the thread; False (logged once) when none can be
        watched. Blocking NVML calls: call it off the event loop."""
        if not hasattr(self.nvml, "nvmlEventSetWait_v2"):
            logger.info("GPU XID errors not watched: this NVML binding has no event API")
            return False
        try:
            self.nvml.nvmlInit()
            event_set = self.nvml.nvmlEventSetCreate()
        except pynvml.NVMLError as exc:
            logger.info("GPU XID errors not watched: no NVIDIA GPU (NVML: %s)", exc)
            return False
        watched, refused = self._register(event_set)
        if not watched:
            self.nvml.nvmlEventSetFree(event_set)
            logger.info("GPU XID errors not watched: no GPU takes XID events%s", refused)
            return False
        logger.info("watching XID errors on GPU(s) %s%s", ",".join(watched), refused)
        with self._lock:
            self.errors = dict.fromkeys(watched, 0)
        self._thread = threading.Thread(target=self._wait, args=(event_set,), name="gpu-xid", daemon=True)
        self._thread.start()
        return True

    def _register(self, event_set: object) -> tuple[list[str], str]:
        """The GPUs registered for XID events, and words on those that refused (or '')."""
        watched, refused = [], []
        try:
            count = self.nvml.nvmlDeviceGetCount()
        except pynvml.NVMLError as exc:
            return [], f" (NVML: {exc})"
        for index in range(count):
            try:
                handle = self.nvml.nvmlDeviceGetHandleByIndex(index)
                self.nvml.nvmlDeviceRegisterEvents(handle, self.nvml.nvmlEventTypeXidCriticalError, event_set)
                watched.append(str(index))
            except pynvml.NVMLError as exc:
                refused.append(f"GPU {index}: {exc}")
        return watched, f" (NVML: {'; '.join(refused)})" if refused else ""

    def _wait(self, event_set: object) -> None:
        """The thread: record each XID event until ``stop``, or until NVML fails (logged)."""
        try:
            while not self._stopping.is_set():
                try:
                    event = self.nvml.nvmlEventSetWait_v2(event_set, self.wait_ms)
                except pynvml.NVMLError as exc:
                    if exc.value == pynvml.NVML_ERROR_TIMEOUT:
                        continue
                    logger.warning("GPU XID errors no longer watched (NVML: %s)", exc)
                    return
                self._record(event)
        finally:
            self.nvml.nvmlEventSetFree(event_set)

    def _record(self, event: object) -> None:
        """Count one XID event on its GPU and keep its code."""
        try:
            gpu = str(self.nvml.nvmlDeviceGetIndex(event.device))
        except pynvml.NVMLError as exc:
            logger.warning("XID %d on a GPU NVML cannot name (NVML: %s)", event.eventData, exc)
            return
        xid = int(event.eventData)
        logger.error("GPU %s: XID error %d (see docs/alerts.md#portraitgpuxiderror)", gpu, xid)
        with self._lock:
            self.errors[gpu] = self.errors.get(gpu, 0) + 1
            self.last[gpu] = xid

    def stop(self) -> None:
        """End the thread (within one wait); blocking: call it off the event loop."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            errors, last = dict(self.errors), dict(self.last)
        if errors:
            family = CounterMetricFamily("portrait_gpu_xid_errors", "XID errors NVML reported on the GPU since "
                                         "the sidecar started.", labels=["gpu"])
            for gpu, count in errors.items():
                family.add_metric([gpu], count)
            yield family
        if last:
            family = GaugeMetricFamily("portrait_gpu_last_xid", "Code of the GPU's last XID error (NVML).",
                                       labels=["gpu"])
            for gpu, xid in last.items():
                family.add_metric([gpu], xid)
            yield family
