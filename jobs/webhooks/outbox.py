"""The sender loop: take due deliveries from a queue, attempt each, record the attempt and when to retry.

The queue is the caller's (the job store's delivery table): ``DeliverySource.due`` hands out deliveries whose
time has come (claimed, so two balancers do not send the same one at once) and ``AttemptSink.record`` writes the
attempt to the delivery log with the next attempt's time, or None when the delivery is finished: delivered,
refused, or out of retry window.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import anyio

from .backoff import RetrySchedule
from .delivery import Attempt, WebhookSender, utc_now

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Delivery:
    """One webhook message to one URL, as the queue holds it."""

    delivery_id: str
    url: str
    message_id: str
    body: bytes
    attempts: int = 0
    """Attempts made so far."""
    first_at: datetime | None = None
    """When the first attempt was made (None before it): the retry window counts from here."""
    retried: bool = True
    """Whether a failed attempt is tried again (the terminal event is; progress is not worth it)."""


class DeliverySource(Protocol):
    async def due(self, now: datetime, limit: int) -> Sequence[Delivery]:
        """Up to ``limit`` deliveries whose next attempt is due at ``now``, claimed for this sender."""
        ...


class AttemptSink(Protocol):
    async def record(self, delivery: Delivery, attempt: Attempt, next_at: datetime | None) -> None:
        """Log ``attempt`` of ``delivery``; schedule the next at ``next_at``, or finish it when None."""
        ...


class Outbox:
    """Sends due deliveries, ``concurrency`` at a time, and records each attempt."""

    def __init__(self, source: DeliverySource, sink: AttemptSink, sender: WebhookSender,
                 schedule: RetrySchedule | None = None, clock: Callable[[], datetime] = utc_now,
                 batch: int = 32, concurrency: int = 8) -> None:
        self.source = source
        self.sink = sink
        self.sender = sender
        self.schedule = schedule or RetrySchedule()
        self.clock = clock
        self.batch = batch
        self.limiter = anyio.CapacityLimiter(concurrency)

    def next_at(self, delivery: Delivery, attempt: Attempt) -> datetime | None:
        """When to try ``delivery`` again after ``attempt``, or None when it is finished."""
        if attempt.outcome != "failed" or not delivery.retried:
            return None
        first_at = delivery.first_at or attempt.at
        return self.schedule.next_attempt_at(delivery.attempts + 1, first_at, attempt.at)

    async def send(self, delivery: Delivery) -> Attempt:
        async with self.limiter:
            attempt = await self.sender.deliver(delivery.url, delivery.message_id, delivery.body)
        await self.sink.record(delivery, attempt, self.next_at(delivery, attempt))
        return attempt

    async def run_once(self) -> int:
        """Attempt every delivery due now (up to ``batch``); the number attempted."""
        due = await self.source.due(self.clock(), self.batch)
        async with anyio.create_task_group() as group:
            for delivery in due:
                group.start_soon(self.send, delivery)
        return len(due)

    async def run(self, poll_s: float = 1.0) -> None:
        """Send forever: a full batch is followed at once by the next, otherwise wait ``poll_s``."""
        while True:
            try:
                sent = await self.run_once()
            except Exception:
                logger.warning("webhook outbox: the delivery queue failed; trying again in %g s", poll_s,
                               exc_info=True)
                sent = 0
            if sent < self.batch:
                await anyio.sleep(poll_s)
