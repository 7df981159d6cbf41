"""The memory-limit search: the largest batch and side that run before CUDA runs out of memory."""

from __future__ import annotations

import logging
from collections.abc import Callable

from bench.gpu.probe import Probe
from bench.gpu.report import fmt_gib
from bench.gpu.rows import LimitRow, Outcome, Variant

logger = logging.getLogger(__name__)

Limit = tuple[int | None, int | None]
"""The largest value that ran and the smallest that failed (``None``: not found)."""


def find_limit(fits: Callable[[int], bool], start: int, ceiling: int, granularity: int) -> Limit:
    """The largest value that fits and the smallest that does not, as far as the search went.

    Doubles from ``start`` while ``fits`` (trying ``ceiling`` itself last), then bisects between
    the last success and the first failure in steps of ``granularity``. ``(None, start)`` when
    even ``start`` fails; ``(largest, None)`` when nothing up to ``ceiling`` failed.
    """
    ok: int | None = None
    value = min(start, ceiling)
    while fits(value):
        ok = value
        if value >= ceiling:
            return ok, None
        value = min(value * 2, ceiling)
    bad = value
    if ok is None:
        return None, bad
    while bad - ok > granularity:
        middle = ok + max(granularity, (bad - ok) // 2 // granularity * granularity)
        if fits(middle):
            ok = middle
        else:
            bad = middle
    return ok, bad


def try_once(job: Callable[[], object], probe: Probe) -> Outcome:
    """Run ``job`` once from a clean allocator; its peak memory, or the failure (OOM or other) in one line."""
    probe.release()
    probe.reset_peak()
    error = None
    try:
        job()
        probe.sync()
    except Exception as exc:  # any failure ends the search; OOM is the expected one
        error = "OOM" if probe.is_oom(exc) else f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
    if error is not None:
        probe.release()
        return Outcome(error=error)
    return Outcome(peak_bytes=probe.peak_bytes())


def search_limit(variant: Variant, search: str, job_for: Callable[[int], Callable[[], object]], probe: Probe,
                 start: int, ceiling: int, granularity: int) -> LimitRow:
    """``find_limit`` over real tries of ``job_for(value)``; the row names the peak at the largest that ran."""
    outcomes: dict[int, Outcome] = {}

    def fits(value: int) -> bool:
        outcomes[value] = outcome = try_once(job_for(value), probe)
        logger.info("%s %s = %d: %s", variant.label, search, value,
                    f"peak {fmt_gib(outcome.peak_bytes)} GiB" if outcome.ok else outcome.error)
        return outcome.ok

    largest, failed = find_limit(fits, start, ceiling, granularity)
    return LimitRow(variant, search, largest, outcomes[largest].peak_bytes if largest is not None else None,
                    failed, outcomes[failed].error if failed is not None else None, ceiling)
