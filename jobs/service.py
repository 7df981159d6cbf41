"""The jobs service: the store brought up to date, the ``/v1/jobs`` API, the dispatcher, the retention
janitor and the webhook outbox in one process and one event loop (``python -m jobs``).

Stateless apart from the store: any number of these (one per balancer host) share one PostgreSQL store, and
any of them may die at any time (a job it was running is taken again by another after its lease). Given the cluster
secret (in its environment, as the balancer's sidecar starts it) it serves only requests that carry it, as HAProxy's
``jobs`` backend sends them, and shows it to the workers' queue; ``/readyz`` says whether the store answers;
``/metrics`` (``jobs.metrics``) what it counts.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from functools import partial

import anyio
from anyio.to_thread import run_sync
from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from sqlalchemy import Engine, text

from jobs.api import JobsApi, create_app
from jobs.api.auth import KeyCache
from jobs.api.sessions import Sessions
from jobs.api.share_tokens import KEY_FILE, ShareSigner, read_share_key
from jobs.api.sync_jobs import SyncOptions
from jobs.contract import API_PREFIX
from jobs.dispatch import Dispatcher, DispatchOptions
from jobs.janitor import run_janitor
from jobs.metrics import JobsMetrics
from jobs.relay import StreamRelay, relay_route
from jobs.running import holder_name
from jobs.settings import JobsSettings
from jobs.store import cancel, ids_by_key, make_engine, upgrade
from jobs.webhooks.backoff import RetrySchedule
from jobs.webhooks.delivery import WebhookSender
from jobs.webhooks.outbox import Outbox
from jobs.webhooks.queue import StoreQueue
from jobs.webhooks.signing import SECRET_FILE, WebhookSigner, read_secret
from jobs.webhooks.targets import TargetGuard
from webui.cluster_secret import ClusterSecret, RequireClusterSecret
from webui.contract import CLUSTER_SECRET_ENV, METRICS_PATH
from webui.queue_client import queue_http
from webui.schema import Limits, WorkerInfo
from webui.session_token import SessionSigner
from webui.web.worker_client import WorkerClient, WorkerInfoCache

logger = logging.getLogger(__name__)

READY_TIMEOUT_S = 2.0
"""How long ``/readyz`` waits for the store's answer before it says not ready."""
RELAY_READ_TIMEOUT_S = 60.0
"""How long a relayed event stream may be silent (a web front sends a heartbeat every 15 s)."""
RELAY_CONNECT_TIMEOUT_S = 5.0


def store_answers(engine: Engine) -> None:
    """One round trip to the store (blocking); raises what the driver raises when it does not answer."""
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))


async def readiness(engine: Engine) -> JSONResponse:
    """``/readyz``: 200 while the store answers within ``READY_TIMEOUT_S``, else a 503 saying why."""
    try:
        with anyio.fail_after(READY_TIMEOUT_S):
            await run_sync(store_answers, engine, abandon_on_cancel=True)
    except Exception as error:  # any driver error or the timeout: the store is not there for us now
        logger.warning("readyz: the job store does not answer: %s", error)
        return JSONResponse({"ready": False, "detail": "The job store does not answer."}, status_code=503)
    return JSONResponse({"ready": True})


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
    metrics = JobsMetrics()
    relay = StreamRelay(queue_http(settings.worker_queue_url, RELAY_READ_TIMEOUT_S, RELAY_CONNECT_TIMEOUT_S,
                                   settings.queue_ca, settings.queue_cert),
                        lambda outcome: metrics.adoptions.labels(outcome).inc(),
                        lambda key: run_sync(cancel_by_key, engine, key))
    metrics.track_store(engine)
    dispatcher = Dispatcher(engine, client, DispatchOptions(
        slots=settings.dispatch_slots, lease_s=settings.lease_seconds,
        job_timeout=timedelta(seconds=settings.job_timeout)), metrics)

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
        await relay.http.aclose()
        await sender.aclose()
        engine.dispose()

    guard = TargetGuard(settings.target_policy())
    sender, queue = webhook_sender(settings, guard), StoreQueue(engine, dispatcher.name)
    outbox = Outbox(queue, queue, sender, RetrySchedule(first_delay_s=settings.webhook_first_retry,
                                                        window_s=settings.webhook_retry_window))
    sync = SyncOptions(dispatcher.runs, holder_name(), settings.queue_wait, timedelta(days=settings.retention_days))
    jobs_api = JobsApi(engine, guard, limits, dispatcher.wake, timedelta(days=settings.retention_days),
                       settings.max_body_bytes, partial(queue.redeliver, sender), sync, share_signer(settings),
                       KeyCache(engine, settings.key_cache_seconds), settings.site_login, sessions(engine), metrics)
    # The OpenAPI page under the API's own prefix: reachable wherever the API is (the balancer routes the prefix).
    app = create_app(jobs_api, lifespan=lifespan, docs_url=f"{API_PREFIX}/docs", redoc_url=None,
                     openapi_url=f"{API_PREFIX}/openapi.json")

    async def readyz() -> JSONResponse:
        return await readiness(engine)

    async def metrics_page() -> Response:
        return Response(await run_sync(metrics.render), media_type=CONTENT_TYPE_LATEST)

    app.add_api_route("/readyz", readyz, include_in_schema=False)
    app.add_api_route(METRICS_PATH, metrics_page, include_in_schema=False)
    relay_route(app, relay)  # clients' Gradio joins and event streams (HAProxy sends them here: jobs.relay)
    secret = ClusterSecret.from_env()
    if secret is not None:
        app.add_middleware(RequireClusterSecret, secret=secret)
    return app


def cancel_by_key(engine: Engine, key: str) -> None:
    """Cancel the jobs submitted with the ``Idempotency-Key`` ``key`` (blocking: the store's)."""
    for job_id in ids_by_key(engine, key):
        cancel(engine, job_id)


def webhook_sender(settings: JobsSettings, guard: TargetGuard) -> WebhookSender:
    """The webhook sender, signing with the operator's secret file, or one generated once in the run dir."""
    path = settings.webhook_secret_file or settings.run_dir / SECRET_FILE
    return WebhookSender(guard, WebhookSigner(read_secret(path, create=settings.webhook_secret_file is None)))


def sessions(engine: Engine) -> Sessions | None:
    """Browser sign-in, its sessions signed with the cluster secret every web front shares; None without one."""
    secret = os.environ.get(CLUSTER_SECRET_ENV)
    return Sessions(engine, SessionSigner(secret)) if secret else None


def share_signer(settings: JobsSettings) -> ShareSigner:
    """The share-link signer, with the operator's key file, or one generated once in the run dir."""
    path = settings.share_key_file or settings.run_dir / KEY_FILE
    return ShareSigner(read_share_key(path, create=settings.share_key_file is None))
