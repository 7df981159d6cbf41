"""Webhooks from the job store's outbox, on SQLite and a real PostgreSQL (each test runs on both), to real
receivers on loopback: the delivery is enqueued with the job change, retried from the store, signed per
Standard Webhooks, logged per attempt, shown and redelivered through the API (in process: httpx's ASGI
transport on the real app), claimed by one service at a time. Time is a fake clock the test moves to each
scheduled retry, so nothing waits. The service as a process (restart, secret file): test_webhook_service.py.

Run under the cluster lock (the PostgreSQL half starts a server):
``flock /tmp/ph-cluster.lock python -m pytest -q tests/test_webhook_outbox.py``.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import anyio
import httpx
from sqlalchemy import Engine, func, select
from standardwebhooks import Webhook

from jobs.api import JobsApi, create_app
from jobs.contract import DELIVERY_LEASE_SECONDS
from jobs.store import (
    Image,
    claim_due,
    claim_next,
    claim_one,
    fail,
    finish,
    job_deliveries,
    make_engine,
    record_progress,
    submit,
    sweep_expired,
)
from jobs.store.schema import webhook_attempts
from jobs.webhooks.backoff import RetrySchedule
from jobs.webhooks.delivery import WebhookSender
from jobs.webhooks.outbox import Outbox
from jobs.webhooks.queue import StoreQueue
from jobs.webhooks.signing import WebhookSigner, new_secret
from jobs.webhooks.targets import TargetGuard, WebhookTargetPolicy
from tests.webhook_receiver import Receiver

SECRET = new_secret()
GUARD = TargetGuard(WebhookTargetPolicy(allow_http=True, allow=("127.0.0.1/32",)))


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


def webhook_job(engine: Engine, receiver: Receiver, events: list[str] | None = None, **extra: Any) -> str:
    """A job with a webhook to ``receiver``, submitted and claimed (the ``start`` event, when asked, is due)."""
    fields = {"prompt": "a portrait", "webhook": f"http://127.0.0.1:{receiver.port}/hook", **extra}
    if events is not None:
        fields["webhook_events_filter"] = events
    job = submit(engine, fields)[0]
    assert claim_next(engine, "dispatcher-a").id == job.id
    return job.id


@dataclass
class Service:
    """One jobs service's webhook half: its queue claims, its outbox sends, its API shows and redelivers."""

    queue: StoreQueue
    outbox: Outbox
    api: httpx.AsyncClient


@asynccontextmanager
async def service(engine: Engine, clock: FakeClock, name: str = "service-a") -> AsyncIterator[Service]:
    async with WebhookSender(GUARD, WebhookSigner(SECRET), clock=clock) as sender:
        queue = StoreQueue(engine, name)
        outbox = Outbox(queue, queue, sender, RetrySchedule(random=random.Random(3).random), clock=clock)
        app = create_app(JobsApi(engine, GUARD, redeliver=partial(queue.redeliver, sender)))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://jobs") as api:
            yield Service(queue, outbox, api)


async def deliver_until_done(engine: Engine, one: Service, clock: FakeClock, job_id: str) -> None:
    """Run the outbox, moving the clock to each scheduled retry, until no delivery of ``job_id`` is pending."""
    while pending := [d for d in job_deliveries(engine, job_id) if d.status == "pending"]:
        clock.now = max(clock.now, min(d.next_attempt_at for d in pending))
        assert await one.outbox.run_once() >= 1
        assert await one.outbox.run_once() == 0  # a retry is not due before its time


def test_a_receiver_failing_five_times_gets_the_sixth_signed_and_the_log_shows_six_attempts(
        job_store: Engine) -> None:
    clock = FakeClock()
    with Receiver(answers=[500, 503, 502, 429, 500]) as receiver:
        job_id = webhook_job(job_store, receiver, ["completed"])
        finish(job_store, job_id, [Image(b"\x89PNG first", width=64, height=64)])

        async def run() -> httpx.Response:
            async with service(job_store, clock) as one:
                await deliver_until_done(job_store, one, clock, job_id)
                return await one.api.get(f"/v1/jobs/{job_id}/deliveries")

        answer = anyio.run(run)
    assert len(receiver.received) == 6
    assert {request.headers["webhook-id"] for request in receiver.received} == {f"msg_{job_id}_completed_0"}
    bodies = [Webhook(SECRET).verify(request.body, request.headers) for request in receiver.received]
    assert all(body == bodies[0] for body in bodies)
    assert (bodies[0]["id"], bodies[0]["event"], bodies[0]["status"]) == (job_id, "completed", "succeeded")
    assert bodies[0]["output"] == [f"/v1/jobs/{job_id}/results/0"] and bodies[0]["error"] is None
    assert answer.status_code == 200, answer.text
    [delivery] = answer.json()["deliveries"]
    assert (delivery["status"], delivery["event"], delivery["next_attempt_at"]) == ("delivered", "completed", None)
    attempts = delivery["attempts"]
    assert [a["number"] for a in attempts] == [1, 2, 3, 4, 5, 6]
    assert [a["status_code"] for a in attempts] == [500, 503, 502, 429, 500, 204]
    assert [a["outcome"] for a in attempts] == ["failed"] * 5 + ["delivered"]
    assert attempts[0]["error"] == "the receiver answered 500" and attempts[-1]["error"] is None
    assert all(a["latency_ms"] >= 0 and not a["redelivery"] for a in attempts)
    times = [datetime.fromisoformat(a["at"]) for a in attempts]
    assert times == sorted(times) and times[-1] - times[0] >= timedelta(seconds=0.8 * 5 * (1 + 2 + 4 + 8 + 16))


def test_redeliver_makes_one_more_logged_attempt_now_with_the_same_id_and_body(job_store: Engine) -> None:
    clock = FakeClock()
    with Receiver(answers=[204, 503]) as receiver:
        job_id = webhook_job(job_store, receiver, ["completed"])
        fail(job_store, job_id, "No worker could run the job before its deadline.")

        async def run() -> tuple[httpx.Response, ...]:
            async with service(job_store, clock) as one:
                await deliver_until_done(job_store, one, clock, job_id)
                path = f"/v1/jobs/{job_id}/deliveries/msg_{job_id}_completed_0/redeliver"
                answers = (await one.api.post(path), await one.api.post(path),
                           await one.api.post(f"/v1/jobs/{job_id}/deliveries/msg_nothing/redeliver"),
                           await one.api.get(f"/v1/jobs/{job_id}/deliveries"))
                claim_one(job_store, job_id, f"msg_{job_id}_completed_0", "service-b")  # b is sending it now
                return *answers, await one.api.post(path)

        first, second, unknown, log, busy = anyio.run(run)
    assert first.status_code == second.status_code == 200, first.text
    assert [(a["status_code"], a["redelivery"]) for a in first.json()["attempts"]] == [(204, False), (503, True)]
    assert second.json()["attempts"][-1]["status_code"] == 204 and second.json()["status"] == "delivered"
    assert len(log.json()["deliveries"][0]["attempts"]) == 3 and len(receiver.received) == 3
    assert len({request.body for request in receiver.received}) == 1
    assert len({request.headers["webhook-id"] for request in receiver.received}) == 1
    body = Webhook(SECRET).verify(receiver.received[-1].body, receiver.received[-1].headers)
    assert (body["status"], body["error"]) == ("failed", "No worker could run the job before its deadline.")
    assert first.json()["status"] == "failed"  # its one more attempt failed: no new retries for a finished one
    assert unknown.status_code == 404 and unknown.json()["error"] == "delivery_not_found"
    assert "has no webhook delivery 'msg_nothing'" in unknown.json()["detail"]
    assert busy.status_code == 409 and busy.json()["error"] == "delivery_in_progress" and len(receiver.received) == 3
    assert sweep_expired(job_store, now=datetime.now(UTC) + timedelta(days=31)) == 1  # its retention ran out
    with job_store.connect() as connection:
        assert connection.execute(select(func.count()).select_from(webhook_attempts)).scalar_one() == 0
    assert job_deliveries(job_store, job_id) == []


def test_two_services_on_one_store_never_send_one_attempt_twice(store_url: str, job_store: Engine) -> None:
    clock = FakeClock()
    other = make_engine(store_url)
    try:
        with Receiver() as receiver:
            jobs = [webhook_job(job_store, receiver, ["completed"]) for _ in range(12)]
            for job_id in jobs:
                finish(job_store, job_id, [Image(b"png")])
            clock.now = datetime.now(UTC)
            first = claim_due(job_store, "service-a", clock.now, limit=5)
            assert len(first) == 5 and claim_due(other, "service-b", clock.now, limit=5)[0].id not in {
                d.id for d in first}  # a live claim is skipped, not shared

            async def run() -> None:
                clock.now += timedelta(seconds=DELIVERY_LEASE_SECONDS + 1)  # both claims ran out: all due again
                async with service(job_store, clock, "service-a") as a, service(other, clock, "service-b") as b:
                    for _ in range(4):
                        async with anyio.create_task_group() as group:
                            group.start_soon(a.outbox.run_once)
                            group.start_soon(b.outbox.run_once)

            anyio.run(run)
    finally:
        other.dispose()
    ids = sorted(request.headers["webhook-id"] for request in receiver.received)
    assert ids == sorted(f"msg_{job_id}_completed_0" for job_id in jobs)
    logs = [job_deliveries(job_store, job_id) for job_id in jobs]
    assert all(len(log) == 1 and log[0].status == "delivered" and len(log[0].log) == 1 for log in logs)


def test_completed_carries_the_one_result_written_and_progress_comes_at_most_every_500_ms(
        job_store: Engine) -> None:
    with Receiver() as receiver:
        job_id = webhook_job(job_store, receiver, ["start", "output", "completed"])
        quiet = webhook_job(job_store, receiver)  # no filter: start and completed, no progress
    claimed = claim_next(job_store, "dispatcher-b", now=datetime.now(UTC) + timedelta(seconds=11))
    assert claimed.id == job_id  # dispatcher-a's lease ran out: dispatcher-b runs the job again
    at = datetime.now(UTC) + timedelta(seconds=12)
    for step in range(11):  # a step every 100 ms
        record_progress(job_store, job_id, "dispatcher-b", step, 10, now=at + timedelta(milliseconds=100 * step))
        record_progress(job_store, quiet, "dispatcher-a", step, 10, now=at + timedelta(milliseconds=100 * step))
    done = at + timedelta(seconds=2)
    assert finish(job_store, job_id, [Image(b"png from dispatcher-b")], now=done).written
    assert not finish(job_store, job_id, [Image(b"png from dispatcher-a")]).written
    assert not fail(job_store, job_id, "late").written
    events = [(d.event, json.loads(d.body)) for d in job_deliveries(job_store, job_id)]
    assert [event for event, _ in events] == ["start", "output", "output", "output", "completed"]
    assert [body["progress"]["step"] for event, body in events if event == "output"] == [0, 5, 10]
    completed = events[-1][1]
    assert completed["status"] == "succeeded" and len(completed["results"]) == 1
    assert completed["results"][0]["sha256"] == hashlib.sha256(b"png from dispatcher-b").hexdigest()
    assert [d.event for d in job_deliveries(job_store, quiet)] == ["start"]
