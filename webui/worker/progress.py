"""``StepClock``: whether the running job's denoising loop has stalled.

The generation thread runs a job inside ``timing()`` and calls ``step(n, total)`` after each
denoising step; the event loop asks ``stalled_for`` and ``stall`` (for
``/readyz``), so a stuck driver call is told while the worker still answers HTTP.

Only the denoising loop is judged: from the job's first step to its last. Before the first step
(text encoding, a first run at a new size) and after the last (VAE decode, PNG encoding) there is
no step rhythm to compare with. The usual step time is an EWMA over consecutive steps of every job
so far; a stall is no step for longer than ``max(floor, factor x usual)``. Under CPU starvation
steps slow down gradually and the EWMA follows them; ``floor`` covers a sudden burst.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

EWMA_WEIGHT = 0.3
"""Weight of the newest step duration in the usual step time."""


@dataclass(frozen=True)
class _LastStep:
    at: float
    step: int
    total: int


class StepClock:
    """Times the denoising steps of the running job (written by one thread, read by another).

    Each write replaces one attribute with a new immutable value, so a reader never sees a
    half-updated step.
    """

    def __init__(self, floor: float, factor: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.floor = floor
        self.factor = factor
        self._clock = clock
        self._last: _LastStep | None = None
        self.usual: float | None = None
        """Usual seconds per denoising step (EWMA); None before two consecutive steps were seen."""

    @contextmanager
    def timing(self) -> Iterator[None]:
        """Around one job: nothing is judged before its first step nor once it is over."""
        self._last = None
        try:
            yield
        finally:
            self._last = None

    def step(self, step: int, total: int) -> None:
        """Step ``step`` of ``total`` has just ended."""
        now = self._clock()
        last = self._last
        if last is not None and step == last.step + 1:
            took = now - last.at
            self.usual = took if self.usual is None else (1 - EWMA_WEIGHT) * self.usual + EWMA_WEIGHT * took
        self._last = _LastStep(now, step, total)

    def stalled_for(self) -> float | None:
        """Seconds since the last step, while the job is inside its denoising loop; None otherwise."""
        last = self._last
        if last is None or last.step >= last.total:
            return None
        return self._clock() - last.at

    def limit(self) -> float:
        """Seconds without a step that make a stall."""
        return max(self.floor, self.factor * (self.usual or 0.0))

    def stall(self) -> str | None:
        """The evidence sentence once the loop has made no step for longer than ``limit``; else None."""
        silent = self.stalled_for()
        limit = self.limit()
        if silent is None or silent <= limit:
            return None
        usual = f"{self.usual:.2f} s" if self.usual is not None else "not known yet"
        return f"stalled: no denoising step for {silent:.1f} s (usual step {usual}, limit {limit:.1f} s)"
