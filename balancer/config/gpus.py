"""This machine's NVIDIA GPUs as NVML sees them, and which local node runs on which.

``list_gpus()`` (for ``launch.py --gpus auto``) and ``gpu_facts()`` (memory, utilisation and
temperature for the sidecar's ``/status`` and ``/metrics``) ask NVML through NVIDIA's own
binding (``nvidia-ml-py``, module ``pynvml``), never torch. On a machine without an NVIDIA
driver both return an empty answer; why is logged once, at INFO. NVML calls block: the sidecar
makes them in a worker thread.

``assign_gpus()`` is the pure rule that places local nodes on GPUs. NVML numbers GPUs in PCI
bus order (as ``nvidia-smi`` does); a worker is given its GPU as ``CUDA_VISIBLE_DEVICES`` with
``CUDA_DEVICE_ORDER=PCI_BUS_ID`` (``GPU_ENV``), so that CUDA counts the same way.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import pynvml

from balancer.config.basics import ClusterConfigError

logger = logging.getLogger(__name__)

CPU_NODES = 2
"""Local nodes started by default on a machine without GPUs (or with ``--gpus none``)."""

GPU_ENV = {"CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
"""Set for every worker given a GPU, besides ``CUDA_VISIBLE_DEVICES``: CUDA's numbering = NVML's."""

_lock = threading.Lock()
_nvml_state: bool | None = None
"""None: not tried yet; True: NVML initialised; False: unavailable (logged once)."""


class GpuAssignmentError(ClusterConfigError):
    """The asked node count and GPUs do not fit together; the message says what to change."""


@dataclass(frozen=True)
class Gpu:
    """One GPU as NVML numbers it."""

    index: int
    name: str
    uuid: str
    memory_total_bytes: int


def _nvml() -> bool:
    """Initialise NVML once per process; False (logged once) when there is no usable driver."""
    global _nvml_state
    with _lock:
        if _nvml_state is None:
            try:
                pynvml.nvmlInit()
                _nvml_state = True
            except pynvml.NVMLError as exc:
                logger.info("no NVIDIA GPU found (NVML: %s)", exc)
                _nvml_state = False
        return _nvml_state


def _read(call, *args: object) -> object | None:
    """One NVML query; None when this GPU does not support it (or it failed)."""
    try:
        return call(*args)
    except pynvml.NVMLError as exc:
        logger.debug("NVML %s: %s", call.__name__, exc)
        return None


def _handles() -> list[tuple[int, object]]:
    """(index, NVML handle) of every GPU; empty without NVML."""
    if not _nvml():
        return []
    count = _read(pynvml.nvmlDeviceGetCount) or 0
    handles = [(index, _read(pynvml.nvmlDeviceGetHandleByIndex, index)) for index in range(count)]
    return [(index, handle) for index, handle in handles if handle is not None]


def list_gpus() -> list[Gpu]:
    """Every GPU NVML sees, in its order (PCI bus order); [] without NVIDIA's driver."""
    gpus = []
    for index, handle in _handles():
        memory = _read(pynvml.nvmlDeviceGetMemoryInfo, handle)
        gpus.append(Gpu(
            index=index,
            name=str(_read(pynvml.nvmlDeviceGetName, handle) or ""),
            uuid=str(_read(pynvml.nvmlDeviceGetUUID, handle) or ""),
            memory_total_bytes=int(memory.total) if memory is not None else 0,
        ))
    return gpus


def gpu_facts() -> dict[str, dict[str, object]]:
    """GPU index (as a string) -> name, uuid and what NVML reports now: ``memory_used_bytes``,
    ``memory_total_bytes``, ``utilization_percent``, ``temperature_celsius``. A fact the GPU does
    not report is left out (never 0); {} without NVIDIA's driver. Blocking: call it off the event loop."""
    facts: dict[str, dict[str, object]] = {}
    for index, handle in _handles():
        entry: dict[str, object] = {
            "name": str(_read(pynvml.nvmlDeviceGetName, handle) or ""),
            "uuid": str(_read(pynvml.nvmlDeviceGetUUID, handle) or ""),
        }
        memory = _read(pynvml.nvmlDeviceGetMemoryInfo, handle)
        if memory is not None:
            entry["memory_used_bytes"] = int(memory.used)
            entry["memory_total_bytes"] = int(memory.total)
        utilization = _read(pynvml.nvmlDeviceGetUtilizationRates, handle)
        if utilization is not None:
            entry["utilization_percent"] = int(utilization.gpu)
        temperature = _read(pynvml.nvmlDeviceGetTemperature, handle, pynvml.NVML_TEMPERATURE_GPU)
        if temperature is not None:
            entry["temperature_celsius"] = int(temperature)
        facts[str(index)] = entry
    return facts


def assign_gpus(gpus: Sequence[int], nodes: int | None, workers_per_gpu: int = 1) -> list[int | None]:
    """The GPU of each local node, in node order (None: CPU).

    Without GPUs: ``nodes`` CPU nodes (``CPU_NODES`` when None). With GPUs: ``workers_per_gpu``
    slots per GPU, taken round-robin over the GPUs (node1 on the first GPU, node2 on the second,
    ...), so fewer nodes than slots still spread; ``nodes`` None takes every slot. More nodes than
    slots is a ``GpuAssignmentError``: two workers silently sharing a GPU's memory would run
    out of it, so sharing is only ever asked for (``workers_per_gpu``), with a warning.
    """
    if workers_per_gpu < 1:
        raise GpuAssignmentError(f"--workers-per-gpu: must be at least 1, not {workers_per_gpu}")
    if not gpus:
        return [None] * (CPU_NODES if nodes is None else nodes)
    slots = [gpu for _ in range(workers_per_gpu) for gpu in gpus]
    count = len(slots) if nodes is None else nodes
    if count > len(slots):
        raise GpuAssignmentError(
            f"--nodes {count} needs {count} GPU slots but there are {len(slots)} ({len(gpus)} GPU(s) "
            f"{','.join(map(str, gpus))} x --workers-per-gpu {workers_per_gpu}): pass fewer --nodes, "
            f"--workers-per-gpu {-(-count // len(gpus))} (workers then share a GPU's memory), or --gpus none"
        )
    assigned = slots[:count]
    shared = sorted({gpu for gpu in assigned if assigned.count(gpu) > 1})
    if shared:
        logger.warning(
            "%d workers per GPU on GPU(s) %s: they share its memory, each loads its own copy of the model "
            "and may run out of memory (exit 86, restarted) where one worker would not",
            workers_per_gpu, ",".join(map(str, shared)),
        )
    unused = [gpu for gpu in gpus if gpu not in assigned]
    if unused:
        logger.info("GPU(s) %s left unused (--nodes %d)", ",".join(map(str, unused)), count)
    return assigned
