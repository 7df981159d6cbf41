"""A job's webhook deliveries: ``GET /v1/jobs/{id}/deliveries`` (each delivery with every attempt: time, HTTP
status or error, latency) and ``POST /v1/jobs/{id}/deliveries/{delivery_id}/redeliver`` (one more attempt now,
logged like the others; answered when it is made)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from anyio.to_thread import run_sync
from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from jobs.api.errors import RESPONSES
from jobs.api.routes import Api, existing_job
from jobs.api.views import PREFIX
from jobs.errors import DeliveryNotFound, WebhooksOff
from jobs.store import Job, QueuedDelivery, job_deliveries


class AttemptView(BaseModel):
    """One attempt to deliver a webhook."""

    number: int = Field(description="1, 2, ... for this delivery.")
    at: datetime
    outcome: str = Field(description="delivered (a 2xx answer), failed, or refused (the target is not allowed).")
    status_code: int | None = Field(None, description="The receiver's HTTP status; null when it never answered.")
    error: str | None = Field(None, description="What went wrong, in words.")
    latency_ms: float = Field(description="From the start of the attempt to the receiver's answer (or the error).")
    redelivery: bool = Field(False, description="Asked for through the redeliver call rather than scheduled.")


class DeliveryView(BaseModel):
    """One webhook message (one event of the job) to the job's webhook, and its attempts."""

    id: str = Field(description="The message's id: its webhook-id header, the same on every attempt.")
    event: str = Field(description="start, output (progress) or completed.")
    url: str
    status: str = Field(description="pending (next_attempt_at says when), delivered, failed (retries are over), "
                        "or refused.")
    created_at: datetime = Field(description="When the event happened (its body is the job as it was then).")
    next_attempt_at: datetime | None = None
    attempts: list[AttemptView]


class DeliveryList(BaseModel):
    """A job's webhook deliveries, oldest first."""

    deliveries: list[DeliveryView]


def delivery_view(queued: QueuedDelivery) -> DeliveryView:
    return DeliveryView(id=queued.id, event=queued.event, url=queued.url, status=queued.status,
                        created_at=queued.created_at, next_attempt_at=queued.next_attempt_at,
                        attempts=[AttemptView(**attempt.__dict__) for attempt in queued.log])


router = APIRouter(prefix=PREFIX, tags=["webhooks"], responses=RESPONSES)


@router.get("/{job_id}/deliveries", response_model=DeliveryList)
async def list_deliveries(job: Annotated[Job, Depends(existing_job)], jobs: Api) -> DeliveryList:
    """The job's webhook deliveries (its delivery log): each event sent to its webhook, with every attempt."""
    found = await run_sync(job_deliveries, jobs.engine, job.id)
    return DeliveryList(deliveries=[delivery_view(queued) for queued in found])


@router.post("/{job_id}/deliveries/{delivery_id}/redeliver", response_model=DeliveryView,
             responses={409: RESPONSES[422], 503: RESPONSES[422]})
async def redeliver(job: Annotated[Job, Depends(existing_job)], delivery_id: str, jobs: Api) -> DeliveryView:
    """Send this delivery once more, now, signed anew with the same webhook-id and body; answered when the
    attempt is made (at most about 15 s), with the delivery and its log. A pending delivery keeps its retries."""
    if jobs.redeliver is None:
        raise WebhooksOff()
    await jobs.redeliver(job.id, delivery_id)
    found = await run_sync(job_deliveries, jobs.engine, job.id)
    for queued in found:
        if queued.id == delivery_id:
            return delivery_view(queued)
    raise DeliveryNotFound(job.id, delivery_id)
