"""What a fault cost the clients, from their load records: one ``FaultRun`` per fault, one table row per fault kind.

A run's records are the calls of its load clients (``bench.harness.load.Record``, each with its resends). The calls
*counted* for the fault are those in flight at some moment between the fault and the moment the cluster had settled
again. For each: did its first try fail (a resend was needed, or nothing helped), was it lost (every resend failed),
and how much longer than a normal call of its client kind it took (normal: the median of that kind's first-try
successes before the fault, or in the whole run where none came before).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

from bench.harness.load import OK, Record

HEADERS = ("fault kind", "runs", "failed first tries", "jobs lost after resends", "max extra latency s",
           "time with two holders s", "load average")


@dataclass
class FaultRun:
    """One fault and the load around it, on the load's clock."""

    kind: str
    records: list[Record]
    fault_at: float
    settled_at: float
    counted_from: float = float("-inf")
    """Calls that started before this are not counted (e.g. those that met an earlier, uncounted fault)."""
    both_held_s: float | None = None
    """Seconds in which both balancers held the floating address (None: no pair of balancers)."""
    load_average: float = 0.0
    """The machine's 1-minute load average at the run's end."""
    notes: list[str] = field(default_factory=list)

    def counted(self) -> list[Record]:
        """The calls in flight between the fault and the settling (started no earlier than ``counted_from``)."""
        return [r for r in self.records
                if r.end > self.fault_at and r.start < self.settled_at and r.start >= self.counted_from]

    def failed_first_tries(self) -> int:
        return sum(r.attempts > 1 or r.outcome != OK for r in self.counted())

    def lost(self) -> int:
        return sum(r.outcome != OK for r in self.counted())

    def normal_s(self, kind: str) -> float | None:
        """A normal call of client kind ``kind``: the median first-try success before the fault (else in the run)."""
        clean = [r for r in self.records if r.kind == kind and r.outcome == OK and r.attempts == 1]
        before = [r.latency for r in clean if r.end <= self.fault_at]
        chosen = before or [r.latency for r in clean]
        return statistics.median(chosen) if chosen else None

    def max_extra_s(self) -> float | None:
        """The longest time beyond normal a counted call took (resends included); None: no call counted."""
        extras = [r.latency - normal for r in self.counted() if (normal := self.normal_s(r.kind)) is not None]
        return max(extras) if extras else None


def summary_row(kind: str, runs: Sequence[FaultRun]) -> list[object]:
    """One table row (``HEADERS``) for the runs of one fault kind."""
    counted = sum(len(run.counted()) for run in runs)
    extras = [extra for run in runs if (extra := run.max_extra_s()) is not None]
    held = [run.both_held_s for run in runs if run.both_held_s is not None]
    loads = [run.load_average for run in runs]
    return [
        kind, len(runs),
        f"{sum(run.failed_first_tries() for run in runs)} of {counted}",
        f"{sum(run.lost() for run in runs)} of {counted}",
        f"{max(extras):.2f}" if extras else "–",
        f"{sum(held):.2f}" if held else "–",
        f"{min(loads):.2f}–{max(loads):.2f}" if loads else "–",
    ]


def summary_rows(runs: Sequence[FaultRun]) -> list[list[object]]:
    """One row per fault kind, in the order the kinds first ran."""
    kinds = list(dict.fromkeys(run.kind for run in runs))
    return [summary_row(kind, [run for run in runs if run.kind == kind]) for kind in kinds]
