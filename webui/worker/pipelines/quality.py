"""The quality gate: a faster configuration must draw what eager bfloat16 draws, or it is refused.

Both configurations draw the same fixed seeds; ``difference`` compares each pair of images by
PSNR (dB, higher is closer; infinite when identical) and mean absolute pixel difference (0-255
levels per channel). ``QualityGate.verdict`` passes a configuration when its worst image keeps
``min_psnr_db`` and ``max_mean_abs``; ``select`` walks candidates fastest first and keeps the
first that passes, logging every refusal and what it falls back to.

No LPIPS or other learned metric: plain pixel statistics need no model and no download, and a
configuration that changes numerics (FP8, a compiled kernel's fusions) shows up in them first.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np
from PIL import Image

logger = logging.getLogger(__name__)

Config = TypeVar("Config")


@dataclass(frozen=True)
class Difference:
    """How far one image is from its reference."""

    psnr_db: float
    mean_abs: float

    def words(self) -> str:
        psnr = "identical" if math.isinf(self.psnr_db) else f"PSNR {self.psnr_db:.1f} dB"
        return f"{psnr}, mean |Δ| {self.mean_abs:.2f}/255"


def difference(reference: Image.Image, candidate: Image.Image) -> Difference:
    """PSNR and mean absolute difference of two images of the same size, over their RGB channels."""
    if reference.size != candidate.size:
        raise ValueError(f"images differ in size: {reference.size} and {candidate.size}")
    ours = np.asarray(reference.convert("RGB"), dtype=np.float64)
    theirs = np.asarray(candidate.convert("RGB"), dtype=np.float64)
    mse = float(np.mean((ours - theirs) ** 2))
    psnr = math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)
    return Difference(psnr_db=psnr, mean_abs=float(np.mean(np.abs(ours - theirs))))


@dataclass(frozen=True)
class Verdict:
    """A configuration's images against the reference: the worst PSNR and mean difference, and whether they pass."""

    passed: bool
    worst: Difference
    reason: str


@dataclass(frozen=True)
class QualityGate:
    """The least PSNR and the most mean absolute difference a faster configuration's images may have."""

    min_psnr_db: float = 30.0
    max_mean_abs: float = 4.0

    def verdict(self, reference: Sequence[Image.Image], candidate: Sequence[Image.Image]) -> Verdict:
        """Compare image ``i`` of ``candidate`` with image ``i`` of ``reference`` (the same seed)."""
        if not reference or len(reference) != len(candidate):
            raise ValueError(f"need the same, non-zero number of images (got {len(reference)} and {len(candidate)})")
        differences = [difference(ours, theirs) for ours, theirs in zip(reference, candidate, strict=True)]
        worst = Difference(min(item.psnr_db for item in differences), max(item.mean_abs for item in differences))
        passed = worst.psnr_db >= self.min_psnr_db and worst.mean_abs <= self.max_mean_abs
        limits = f"needs PSNR >= {self.min_psnr_db:g} dB and mean |Δ| <= {self.max_mean_abs:g}"
        return Verdict(passed, worst, f"{worst.words()} ({'within' if passed else 'outside'} the gate: {limits})")


@dataclass(frozen=True)
class Selection(Generic[Config]):
    """What ``select`` kept, and every verdict on the way (in the order tried)."""

    chosen: Config
    verdicts: list[tuple[Config, Verdict]]


def select(candidates: Sequence[Config], render: Callable[[Config], Sequence[Image.Image]],
           reference: Sequence[Image.Image], gate: QualityGate, baseline: Config,
           label: Callable[[Config], str] = str) -> Selection[Config]:
    """The first of ``candidates`` (fastest first) whose images pass ``gate``; ``baseline`` when none does.

    ``render(config)`` draws the same seeds as ``reference`` (the baseline's images).
    """
    verdicts: list[tuple[Config, Verdict]] = []
    for index, candidate in enumerate(candidates):
        verdict = gate.verdict(reference, render(candidate))
        verdicts.append((candidate, verdict))
        if verdict.passed:
            logger.info("quality gate: %s kept: %s", label(candidate), verdict.reason)
            return Selection(candidate, verdicts)
        following = candidates[index + 1] if index + 1 < len(candidates) else baseline
        logger.warning("quality gate: %s refused: %s; falling back to %s", label(candidate), verdict.reason,
                       label(following))
    return Selection(baseline, verdicts)
