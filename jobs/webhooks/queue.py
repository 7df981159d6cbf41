"""The outbox's queue is the job store: ``StoreQueue`` hands the ``Outbox`` the deliveries due in the store
(claimed for this service) and logs each attempt there with the next one's time; ``redeliver`` makes one more
attempt of a delivery now, logged like the others, whatever its status.
"""

from __future__ import annotations

import logging
from datetime import datetime

from anyio.to_thread import run_sync
from sqlalchemy import Engine

from jobs.contract import DELIVERY_LEASE_SECONDS
from jobs.store import LoggedAttempt, QueuedDelivery, claim_due, claim_one, record_attempt
from jobs.store.outbox import PENDING

from .delivery import Attempt, WebhookSender
from .outbox import Delivery

logger = logging.getLogger(__name__)


def outbox_delivery(queued: QueuedDelivery) -> Delivery:
    """A queued delivery as the outbox sends it (its id is its ``webhook-id``)."""
    return Delivery(queued.id, queued.url, queued.id, queued.body.encode("utf-8"), queued.attempts,
                    queued.first_attempt_at, queued.retried)


def logged(attempt: Attempt, redelivery: bool = False) -> LoggedAttempt:
    """An attempt as the delivery log keeps it (the store numbers it)."""
    return LoggedAttempt(0, attempt.at, attempt.outcome, attempt.status_code, attempt.error, attempt.latency_ms,
                         redelivery)


class StoreQueue:
    """The store's delivery queue as the outbox's ``DeliverySource`` and ``AttemptSink``, for service ``owner``."""

    def __init__(self, engine: Engine, owner: str, lease_s: float = DELIVERY_LEASE_SECONDS) -> None:
        self.engine = engine
        self.owner = owner
        self.lease_s = lease_s

    async def due(self, now: datetime, limit: int) -> list[Delivery]:
        claimed = await run_sync(claim_due, self.engine, self.owner, now, limit, self.lease_s)
        return [outbox_delivery(queued) for queued in claimed]

    async def record(self, delivery: Delivery, attempt: Attempt, next_at: datetime | None) -> None:
        await run_sync(record_attempt, self.engine, delivery.delivery_id, self.owner, logged(attempt), next_at)

    async def redeliver(self, sender: WebhookSender, job_id: str, delivery_id: str) -> LoggedAttempt:
        """One more attempt of ``job_id``'s delivery ``delivery_id`` now; a pending delivery keeps its schedule
        if this attempt fails too. ``DeliveryNotFound``, ``DeliveryInProgress`` (another attempt is being made)."""
        queued = await run_sync(claim_one, self.engine, job_id, delivery_id, self.owner, None, self.lease_s)
        attempt = await sender.deliver(queued.url, queued.id, queued.body.encode("utf-8"))
        keep = queued.next_attempt_at if queued.status == PENDING else None
        logger.info("webhook %s redelivered on request: %s", delivery_id, attempt.outcome)
        return await run_sync(record_attempt, self.engine, delivery_id, self.owner, logged(attempt, True), keep)
