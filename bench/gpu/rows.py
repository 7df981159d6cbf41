"""The GPU benchmark's vocabulary: image sizes, variants, and one row per measurement."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from bench.report import LatencyStats

PROG = "python -m bench.gpu"


SERVING_GOAL = 0.05
"""The serving path's p50 may exceed the bare diffusers loop's by this fraction."""
DIFFUSERS, SERVING = "diffusers", "serving"
GIB = 1024**3


@dataclass(frozen=True, order=True)
class Size:
    """An image size in pixels (``WIDTHxHEIGHT`` on the command line)."""

    width: int
    height: int

    @property
    def label(self) -> str:
        return f"{self.width}×{self.height}"

    @classmethod
    def parse(cls, text: str) -> Size:
        """``768x1024`` (width x height) or ``1024`` (square); sides must be multiples of 16 (Z-Image)."""
        parts = text.lower().replace("×", "x").split("x")
        try:
            width, height = (int(parts[0]), int(parts[-1])) if len(parts) in (1, 2) else (0, 0)
        except ValueError:
            width = height = 0
        if width <= 0 or height <= 0 or width % 16 or height % 16:
            raise argparse.ArgumentTypeError(f"{text!r} is not WIDTHxHEIGHT with positive multiples of 16")
        return cls(width, height)


@dataclass(frozen=True)
class Variant:
    """How the twin runs: weight dtype, attention backend, ``torch.compile`` of the transformer."""

    dtype: str
    attention: str
    compile: bool

    @property
    def cells(self) -> list[str]:
        return [self.dtype, self.attention, "on" if self.compile else "off"]

    @property
    def label(self) -> str:
        return "/".join(self.cells[:2] + ["compiled" if self.compile else "eager"])


@dataclass(frozen=True)
class PathTiming:
    """One path's timings at one size."""

    stats: LatencyStats
    peak_bytes: int
    first_call_s: float | None


@dataclass(frozen=True)
class LatencyRow:
    variant: Variant
    size: Size
    path: str
    timing: PathTiming


@dataclass(frozen=True)
class BuildRow:
    variant: Variant
    build_s: float
    weights_bytes: int


@dataclass(frozen=True)
class PromotionRow:
    """A warm standby's takeover with real-size weights: host memory -> GPU, then the worker's warm-up."""

    variant: Variant
    weights_bytes: int
    pageable_gbps: float
    """Host -> GPU copy rate of one large pageable tensor (GB/s): the floor for weights in ordinary memory."""
    pinned_gbps: float
    """The same from page-locked memory."""
    place_pageable_s: float
    """``PortraitPipeline.place`` from ordinary host memory."""
    place_pinned_s: float
    """``PortraitPipeline.place`` after ``pin_host_memory`` (what the standby does while it waits)."""
    warmup_s: float
    """The worker's warm-up generation right after (``webui.worker.pipelines.warmup.self_check``)."""

    @property
    def copy_floor_s(self) -> float:
        """The weights' bytes at the pageable copy rate: 'the host-RAM -> GPU weight copy' of the goal."""
        return self.weights_bytes / (self.pageable_gbps * 1e9)

    @property
    def takeover_s(self) -> float:
        """What the standby spends after the go before it is ready: pinned place + warm-up."""
        return self.place_pinned_s + self.warmup_s


@dataclass(frozen=True)
class Outcome:
    """One try of the memory-limit search: its peak memory, or why it failed."""

    peak_bytes: int | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class LimitRow:
    """The result of one memory-limit search."""

    variant: Variant
    search: str
    largest_ok: int | None
    peak_bytes: int | None
    first_failure: int | None
    failure: str | None
    ceiling: int
