"""The jobs service: the store brought up to date, the ``/v1/jobs`` API, the dispatcher, the retention
janitor and the webhook outbox in one process and one event loop (``python -m jobs``).

Stateless apart from the store: any number of these (one per balancer host) share one PostgreSQL store, and
any of them may die at any time (a job it was running is taken again by another after its lease).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from functools import partial

import anyio
from fastapi import FastAPI

from jobs.api import JobsApi, create_app
from jobs.dispatch import Dispatcher, DispatchOptions
from jobs.janitor import run_janitor
from jobs.settings import JobsSettings
from jobs.store import make_engine, upgrade
from jobs.webhooks.backoff import RetrySchedule
from jobs.webhooks.delivery import WebhookSender
from jobs.webhooks.outbox import Outbox
from jobs.webhooks.queue import StoreQueue
from jobs.webhooks.signing import SECRET_FILE, WebhookSigner, read_secret
from jobs.webhooks.targets import TargetGuard
from webui.schema import Limits, WorkerInfo
from webui.web.worker_client import WorkerClient, WorkerInfoCache

logger = logging.getLogger(__name__)


def build_app(settings: JobsSettings) -> FastAPI:
    """The service's app: migrate the store, then serve the API while the dispatcher and janitor run."""
    url = settings.resolved_store_url()
    if url.startswith("sqlite:///"):
        settings.run_dir.mkdir(parents=True, exist_ok=True)
    upgrade(url)
    engine = make_engine(url)
    client = WorkerClient(settings.worker_queue_url, max_attempts=1, timeout=settings.worker_timeout,
                          ca_file=settings.queue_ca, cert_file=settings.queue_cert)
    info = WorkerInfoCache(client, ttl=10.0)
    dispatcher = Dispatcher(engine, client, DispatchOptions(
        slots=settings.dispatch_slots, lease_s=settings.lease_seconds,
        job_timeout=timedelta(seconds=settings.job_timeout)))

    async def limits() -> Limits:
        """The workers' limits (their /info), or the schema's defaults while none answers."""
        answer = await info.get()
        return answer.limits if isinstance(answer, WorkerInfo) else Limits()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        async with anyio.create_task_group() as group:
            group.start_soon(dispatcher.run)
            group.start_soon(run_janitor, engine, settings.janitor_every)
            group.start_soon(outbox.run, settings.webhook_poll)
            try:
                yield
            finally:
                group.cancel_scope.cancel()
        await client.aclose()
        await sender.aclose()
        engine.dispose()

    guard = TargetGuard(settings.target_policy())
    sender, queue = webhook_sender(settings, guard), StoreQueue(engine, dispatcher.name)
    outbox = Outbox(queue, queue, sender, RetrySchedule(first_delay_s=settings.webhook_first_retry,
                                                        window_s=settings.webhook_retry_window))
    jobs_api = JobsApi(engine, guard, limits, dispatcher.wake, timedelta(days=settings.retention_days),
                       settings.max_body_bytes, partial(queue.redeliver, sender))
    return create_app(jobs_api, lifespan=lifespan)


def webhook_sender(settings: JobsSettings, guard: TargetGuard) -> WebhookSender:
    """The webhook sender, signing with the operator's secret file, or one generated once in the run dir."""
    path = settings.webhook_secret_file or settings.run_dir / SECRET_FILE
    return WebhookSender(guard, WebhookSigner(read_secret(path, create=settings.webhook_secret_file is None)))
