"""The operations page's figures and their last hour: one ``Sample`` of the cluster every ``interval`` seconds in a
bounded ring (``OpsHistory``), read from the sidecar's own ``/status`` document and HAProxy's counters.

"Jobs" here are the requests of HAProxy's workers backend: every generation (the studio page, ``gradio_client``,
REST, the jobs service's dispatcher) goes through it, and nothing else does (probes and ``/info`` have a backend of
their own). Queued: waiting in its queue; running: held by a worker; done and failed: its 2xx and 5xx answers.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from balancer.api.haproxy_view import HAProxyView
from balancer.haproxy.names import HOLDING_SERVER, WORKERS_BACKEND

logger = logging.getLogger(__name__)

SAMPLE_INTERVAL = 10.0
"""Seconds between two samples of the ring."""
SPAN = 3600.0
"""Seconds of history the page shows (the ring holds ``SPAN / interval`` samples, no more)."""


@dataclass(frozen=True)
class Sample:
    """The cluster at one moment (``at``: ``time.monotonic()``); counters None when HAProxy did not answer."""

    at: float
    workers_ready: int
    workers_configured: int
    queued: int | None
    running: int | None
    done_total: int | None
    failed_total: int | None

    @classmethod
    def of(cls, document: dict, view: HAProxyView | None, at: float) -> Sample:
        """From a ``/status`` document and HAProxy's view of the same moment."""
        workers = [parts["worker"] for parts in document["nodes"].values() if "worker" in parts]
        ready = sum(worker["state"] == "ready" for worker in workers)
        if view is None:
            return cls(at, ready, len(workers), None, None, None, None)
        servers = [row for (backend, server), row in view.servers.items()
                   if backend == WORKERS_BACKEND and server != HOLDING_SERVER]  # workers, not the jobs service
        answers = view.answers.get(WORKERS_BACKEND)
        return cls(at, ready, len(workers),
                   view.queued.get(WORKERS_BACKEND, 0) + sum(server.queued for server in servers),
                   sum(server.current_sessions for server in servers),
                   answers.ok if answers else None, answers.failed if answers else None)


def increments(totals: Iterable[int | None]) -> list[int]:
    """How much a counter grew from each value to the next; a drop (HAProxy restarted, its counters from 0) counts
    the new value; an unknown value (None) is skipped over."""
    grown, last = [], None
    for total in totals:
        if total is None:
            continue
        if last is not None:
            grown.append(total - last if total >= last else total)
        last = total
    return grown


@dataclass(frozen=True)
class Figures:
    """The page's figures: ``now`` and what the ring holds of the last hour, ``now`` included."""

    now: Sample
    samples: list[Sample]

    @property
    def done_last_hour(self) -> int:
        return sum(increments(sample.done_total for sample in self.samples))

    @property
    def failed_last_hour(self) -> int:
        return sum(increments(sample.failed_total for sample in self.samples))

    def window(self, span: float) -> float:
        """Seconds the plots cover: ``span``, or less while the sidecar has not run that long (at least one)."""
        return min(span, max(1.0, self.now.at - self.samples[0].at))

    def series(self, name: str) -> list[tuple[float, float]]:
        """(seconds before now, value) of one field, oldest first, unknown values left out; ``done`` and ``failed``
        as the growth since the previous sample."""
        if name in ("done", "failed"):
            known = [(sample.at, getattr(sample, f"{name}_total")) for sample in self.samples]
            known = [(at, total) for at, total in known if total is not None]
            grown = increments(total for _, total in known)
            return [(self.now.at - at, float(step)) for (at, _), step in zip(known[1:], grown, strict=True)]
        values = [(sample.at, getattr(sample, name)) for sample in self.samples]
        return [(self.now.at - at, float(value)) for at, value in values if value is not None]


class OpsHistory:
    """The last ``span`` seconds of samples, one every ``interval``; ``run`` takes them with ``read``."""

    def __init__(self, read: Callable[[], Awaitable[Sample]], interval: float = SAMPLE_INTERVAL,
                 span: float = SPAN) -> None:
        self.read = read
        self.interval = interval
        self.span = span
        self.samples: deque[Sample] = deque(maxlen=max(2, int(span / interval) + 1))

    def record(self, sample: Sample) -> None:
        """Keep a sample (the oldest goes once the ring is full)."""
        self.samples.append(sample)

    def figures(self, now: Sample) -> Figures:
        """The figures at ``now``: the samples of the last ``span`` seconds, then ``now``."""
        recent = [sample for sample in self.samples if now.at - sample.at <= self.span and sample.at < now.at]
        return Figures(now, [*recent, now])

    async def run(self) -> None:
        """Take a sample now and every ``interval`` seconds, until cancelled."""
        while True:
            try:
                self.record(await self.read())
            except Exception:  # a failed read leaves a gap in the plots, never stops them
                logger.exception("could not take a sample for the operations page")
            await asyncio.sleep(self.interval)
