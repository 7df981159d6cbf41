"""What the GPU benchmark's measurements need from the device: ``CudaProbe`` (a fake in the tests)."""

from __future__ import annotations

import gc
import time
from typing import Protocol

from bench.gpu.rows import GIB


class Probe(Protocol):
    """What the measurements need from the device (CUDA here, a fake in the tests)."""

    def sync(self) -> None: ...

    def reset_peak(self) -> None: ...

    def peak_bytes(self) -> int: ...

    def allocated_bytes(self) -> int: ...

    def release(self) -> None: ...

    def is_oom(self, exc: BaseException) -> bool: ...

    def host_copy_gbps(self, pinned: bool) -> float: ...

    def to_host(self, pipe) -> None: ...


class CudaProbe:
    """``Probe`` over ``torch.cuda`` (device 0)."""

    OOM_MARKERS = ("out of memory", "CUBLAS_STATUS_ALLOC_FAILED", "CUDNN_STATUS_NOT_ENOUGH_WORKSPACE")

    def __init__(self) -> None:
        import torch

        self.cuda = torch.cuda

    def sync(self) -> None:
        self.cuda.synchronize()

    def reset_peak(self) -> None:
        self.cuda.reset_peak_memory_stats()

    def peak_bytes(self) -> int:
        return self.cuda.max_memory_allocated()

    def allocated_bytes(self) -> int:
        return self.cuda.memory_allocated()

    def release(self) -> None:
        gc.collect()
        self.cuda.empty_cache()

    def is_oom(self, exc: BaseException) -> bool:
        return isinstance(exc, self.cuda.OutOfMemoryError) or (
            isinstance(exc, RuntimeError) and any(marker in str(exc) for marker in self.OOM_MARKERS))

    def host_copy_gbps(self, pinned: bool, size_bytes: int = 2 * GIB, tries: int = 3) -> float:
        """The best of ``tries`` copies of one ``size_bytes`` host tensor (pageable or pinned) to the GPU, in GB/s."""
        import torch

        source = torch.ones(size_bytes, dtype=torch.uint8, pin_memory=pinned)
        target = torch.empty(size_bytes, dtype=torch.uint8, device="cuda")
        best = float("inf")
        for _ in range(tries):
            self.sync()
            started = time.perf_counter()
            target.copy_(source)
            self.sync()
            best = min(best, time.perf_counter() - started)
        del source, target
        self.release()
        return size_bytes / best / 1e9

    def to_host(self, pipe) -> None:
        """Move ``pipe``'s weights back to ordinary host memory (as a standby holds them before pinning)."""
        pipe.to("cpu")
        self.release()
