"""Webhook delivery against real receivers on loopback (jobs/webhooks/delivery.py, signing, backoff, outbox, events).

No mocks of httpx: every attempt is a real HTTP(S) request to a uvicorn receiver; time is a fake clock that the
test moves to each scheduled retry, so nothing waits.
"""

from __future__ import annotations

import random
import socket
import ssl
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from jobs.webhooks.backoff import RetrySchedule
from jobs.webhooks.delivery import Attempt, DeliveryLimits, WebhookSender
from jobs.webhooks.events import WebhookEvent, message_id, parse_events_filter, payload
from jobs.webhooks.outbox import Delivery, Outbox
from jobs.webhooks.signing import WebhookSigner, new_secret
from jobs.webhooks.targets import TargetGuard, WebhookTargetPolicy
from tests.webhook_receiver import Receiver, make_tls_files

SECRET = new_secret()
LOOPBACK = WebhookTargetPolicy(allow_http=True, allow=("127.0.0.1/32",))
JOB = {"id": "j_1", "status": "succeeded", "output": ["https://portrait.example/r/j_1/0.png"]}


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


def sender(policy: WebhookTargetPolicy = LOOPBACK, **options: object) -> WebhookSender:
    return WebhookSender(TargetGuard(policy, **options.pop("guard", {})), WebhookSigner(SECRET), **options)


def deliver(url: str, policy: WebhookTargetPolicy = LOOPBACK, **options: object) -> Attempt:
    async def run() -> Attempt:
        async with sender(policy, **options) as one:
            return await one.deliver(url, "msg_j_1_completed_0", payload(JOB))
    return anyio.run(run)


class MemoryQueue:
    """The smallest real delivery queue: one table of deliveries and one delivery log, in memory."""

    def __init__(self, deliveries: Sequence[Delivery]) -> None:
        self.pending = {d.delivery_id: (d, datetime.min.replace(tzinfo=UTC)) for d in deliveries}
        self.log: list[tuple[Attempt, datetime | None]] = []

    async def due(self, now: datetime, limit: int) -> list[Delivery]:
        return [d for d, at in self.pending.values() if at <= now][:limit]

    async def record(self, delivery: Delivery, attempt: Attempt, next_at: datetime | None) -> None:
        self.log.append((attempt, next_at))
        self.pending.pop(delivery.delivery_id)
        if next_at is not None:
            retry = Delivery(delivery.delivery_id, delivery.url, delivery.message_id, delivery.body,
                             delivery.attempts + 1, delivery.first_at or attempt.at)
            self.pending[delivery.delivery_id] = (retry, next_at)


def test_a_receiver_that_fails_five_times_gets_the_sixth_attempt_signed_once_per_attempt() -> None:
    clock = FakeClock()
    schedule = RetrySchedule(random=random.Random(7).random)
    with Receiver(answers=[500, 503, 502, 429, 500]) as receiver:
        queue = MemoryQueue([Delivery("d_1", f"http://127.0.0.1:{receiver.port}/hook",
                                      message_id("j_1", WebhookEvent.COMPLETED), payload(JOB))])

        async def drive() -> None:
            async with sender(clock=clock) as one:
                outbox = Outbox(queue, queue, one, schedule, clock=clock)
                while queue.pending:
                    assert await outbox.run_once() == 1
                    assert await outbox.run_once() == 0  # the retry is not due before its time
                    if queue.log[-1][1] is not None:
                        clock.now = queue.log[-1][1]

        anyio.run(drive)
    assert [(a.outcome, a.status_code) for a, _ in queue.log] == [("failed", s) for s in (500, 503, 502, 429, 500)] + [
        ("delivered", 204)]
    assert queue.log[-1][1] is None and all(a.latency_ms >= 0 and a.address == "127.0.0.1" for a, _ in queue.log)
    waits = [(queue.log[n + 1][0].at - queue.log[n][0].at).total_seconds() for n in range(5)]
    assert all(0.8 * 5 * 2 ** n <= wait <= 5 * 2 ** n for n, wait in enumerate(waits))
    assert len(receiver.received) == 6 and {r.headers["webhook-id"] for r in receiver.received} == {
        "msg_j_1_completed_0"}
    for request, (attempt, _) in zip(receiver.received, queue.log, strict=True):
        assert Webhook(SECRET).verify(request.body, request.headers) == JOB
        assert request.headers["webhook-timestamp"] == str(int(attempt.at.timestamp()))


def test_the_package_verifies_our_signature_and_rejects_a_tampered_body_or_another_secret() -> None:
    at, body = datetime.now(UTC), payload(JOB)
    headers = WebhookSigner(SECRET).headers("msg_1", body, at)
    assert Webhook(SECRET).verify(body, headers) == JOB
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(body.replace(b"succeeded", b"failed"), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, headers)
    assert SECRET not in repr(WebhookSigner(SECRET))
    with pytest.raises(ValueError, match="whsec_"):
        WebhookSigner("not-a-secret")


def test_a_redirect_to_another_loopback_port_is_not_followed() -> None:
    with Receiver() as inside, Receiver(answers=[307], location=f"http://127.0.0.1:{inside.port}/") as outside:
        attempt = deliver(f"http://127.0.0.1:{outside.port}/hook")
    assert (attempt.outcome, attempt.status_code) == ("failed", 307)
    assert "redirects are not followed" in attempt.error
    assert len(outside.received) == 1 and inside.received == []


def test_dns_rebinding_delivery_connects_to_the_vetted_address_only() -> None:
    """The resolver answers an allowed address (127.0.0.2) first, then the operator's 127.0.0.1; the system's own
    resolver also says 127.0.0.1 for this name. Only the vetted 127.0.0.2 receiver may see the request."""
    answers = iter([["127.0.0.2"], ["127.0.0.1"], ["127.0.0.1"]])

    def rebinding(host: str, port: int) -> list[str]:
        return next(answers)

    with Receiver(host="127.0.0.2") as vetted, Receiver(host="127.0.0.1", port=vetted.port) as secret:
        attempt = deliver(f"http://localhost:{vetted.port}/hook",
                          WebhookTargetPolicy(allow_http=True, allow=("127.0.0.2/32",)), guard={"resolver": rebinding})
    assert (attempt.outcome, attempt.address) == ("delivered", "127.0.0.2")
    assert len(vetted.received) == 1 and secret.received == []
    assert vetted.received[0].headers["host"] == f"localhost:{vetted.port}"
    assert next(answers) == ["127.0.0.1"]  # one lookup per attempt, not two


def test_https_goes_to_the_vetted_address_with_sni_and_certificate_checked_against_the_host_name(
        tmp_path: Path) -> None:
    ca, cert, key = make_tls_files(tmp_path, ["hooks.test"])
    trust = ssl.create_default_context(cafile=str(ca))
    policy = WebhookTargetPolicy(allow=("127.0.0.1/32",))
    resolver = {"resolver": lambda host, port: ["127.0.0.1"]}
    with Receiver(tls=(cert, key)) as receiver:
        good = deliver(f"https://hooks.test:{receiver.port}/hook", policy, guard=resolver, verify=trust)
        wrong = deliver(f"https://other.test:{receiver.port}/hook", policy, guard=resolver, verify=trust)
    assert (good.outcome, good.status_code, good.address) == ("delivered", 204, "127.0.0.1")
    assert receiver.received[0].headers["host"] == f"hooks.test:{receiver.port}"
    assert wrong.outcome == "failed" and "TLS handshake failed" in wrong.error and len(receiver.received) == 1


def test_a_2xx_answer_is_delivered_without_reading_more_than_64_kib_of_an_endless_body() -> None:
    with Receiver(endless=True) as receiver:
        attempt = deliver(f"http://127.0.0.1:{receiver.port}/hook", limits=DeliveryLimits(total_s=3))
    assert (attempt.outcome, attempt.status_code) == ("delivered", 200)


def test_a_refused_target_is_never_contacted() -> None:
    with Receiver() as receiver:
        attempt = deliver(f"http://localhost:{receiver.port}/hook", WebhookTargetPolicy(allow_http=True))
    assert attempt.outcome == "refused" and "loopback" in attempt.error and receiver.received == []


def test_an_unreachable_or_silent_receiver_is_a_failed_attempt_not_an_exception() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        refused = deliver(f"http://127.0.0.1:{port}/hook")
        closed.listen()  # the kernel accepts the connection; nobody ever answers
        silent = deliver(f"http://127.0.0.1:{port}/hook", limits=DeliveryLimits(read_s=0.3, total_s=5))
    assert refused.outcome == "failed" and "could not connect" in refused.error
    assert silent.outcome == "failed" and "no answer within 0.3 s" in silent.error


def test_the_retry_schedule_doubles_to_an_hour_and_spans_the_whole_window() -> None:
    schedule = RetrySchedule(jitter=0)
    assert [schedule.delay_s(n) for n in range(1, 12)] == [5, 10, 20, 40, 80, 160, 320, 640, 1280, 2560, 3600]
    first = now = datetime(2026, 1, 1, tzinfo=UTC)
    attempts = 1
    while (next_at := schedule.next_attempt_at(attempts, first, now)) is not None:
        now, attempts = next_at, attempts + 1
    assert now == first + timedelta(hours=24) and 30 < attempts < 40
    jittered = RetrySchedule(random=random.Random(1).random)
    assert all(0.8 * 80 <= jittered.delay_s(5) <= 80 for _ in range(100))


def test_the_events_filter_defaults_to_start_and_completed_and_names_unknown_words() -> None:
    assert parse_events_filter(None) == {WebhookEvent.START, WebhookEvent.COMPLETED}
    assert parse_events_filter(["output", "completed"]) == {WebhookEvent.OUTPUT, WebhookEvent.COMPLETED}
    with pytest.raises(ValueError, match="'finished'"):
        parse_events_filter(["completed", "finished"])
