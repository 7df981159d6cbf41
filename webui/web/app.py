"""A node's web front: the studio page (Gradio 6) mounted in FastAPI, health routes, and main.

    python -m webui.web --port 7860 --worker-queue http://127.0.0.1:7960 --node node1

``create_app`` builds the FastAPI app: ``GET /healthz`` (the process is alive), ``GET /readyz``
(this web front serves the studio; whether workers are up is HAProxy's knowledge, and the page
shows it from the workers' ``/info``) and the Gradio page at ``/`` (API under ``/gradio_api/``).
Behind a proxy, Gradio builds its URLs from ``X-Forwarded-Host``/``-Proto`` or the ``Host``
header; set ``--root-path`` when the proxy serves the page under a sub-path. ``--share``
opens a Gradio share link to this one node (``launch.py --share`` links the balancer instead).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import gradio as gr
import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from gradio.utils import get_upload_folder
from starlette.routing import Mount

from webui.access_log import uvicorn_log_config
from webui.cluster_secret import ClusterSecret, RequireClusterSecret
from webui.contract import CLUSTER_SECRET_ENV, HEALTH_PATH, PRIVATE_UMASK, READY_PATH
from webui.images import guard_decoding
from webui.log_setup import configure_logging
from webui.settings import WebSettings
from webui.settings_common import settings_from_cli
from webui.share import ShareTunnel
from webui.trace import TraceIds
from webui.traffic import count_traffic
from webui.web.cache_janitor import CacheJanitor
from webui.web.gradio_routes import GradioRoutes
from webui.web.handoff import Handoff, HandoffServer, HandOn
from webui.web.job_files import JobResultFiles
from webui.web.jobs_client import JobsClient
from webui.web.loop_health import LoopWatch, settle_matplotlib
from webui.web.queue_pacer import PaceQueue, QueuePacer
from webui.web.request_guard import RequestGuard
from webui.web.session_jobs import AwaitedStreams
from webui.web.signin import SignIn
from webui.web.studio.adoption import Adoption
from webui.web.studio.config import CSS_PATH, load_examples, load_studio_config
from webui.web.studio.handlers import Studio
from webui.web.studio.history import HistoryPanel
from webui.web.studio.job_page import JobPage
from webui.web.studio.jobs_runner import JobRunner
from webui.web.studio.layout import build_studio
from webui.web.upload_limit import UploadFileLimit
from webui.web.upload_progress import BoundedUploadProgress
from webui.web.upload_progress import install as install_upload_progress
from webui.web.worker_client import WorkerClient, WorkerInfoCache

logger = logging.getLogger(__name__)

WORKER_INFO_TTL = 2.0
"""Seconds the workers' ``/info`` answer is reused by the page."""


def create_app(settings: WebSettings) -> FastAPI:
    """The web front's ASGI app for ``settings``; its worker client closes on shutdown."""
    node = settings.resolved_node()
    client = WorkerClient(
        settings.worker_queue,
        max_attempts=settings.max_attempts,
        retry_delay=settings.retry_delay,
        timeout=settings.request_timeout,
        ca_file=settings.worker_queue_ca,
        cert_file=settings.worker_queue_cert,
    )
    worker_info = WorkerInfoCache(client, ttl=WORKER_INFO_TTL)
    settle_matplotlib()  # before serving: Gradio's first call would import it inside the event loop
    watch = LoopWatch()
    serving = False

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        nonlocal serving
        logger.info("web front %s serving the studio; workers at %s; jobs %s", node, settings.worker_queue,
                    settings.jobs_url or "run here")
        watch.start()
        janitor.start()
        pacer.start()
        serving = True
        yield
        serving = False
        await watch.stop()
        await pacer.stop()
        await janitor.stop()
        await client.aclose()
        if jobs_client is not None:
            await jobs_client.aclose()

    app = FastAPI(title="portrait-ha web front", lifespan=lifespan, docs_url=None, redoc_url=None)
    traffic = count_traffic(app)  # what a sidecar waits on in a rolling restart

    @app.get(HEALTH_PATH)
    async def healthz() -> dict[str, str]:
        """The process is up and serving HTTP."""
        return {"status": "ok", "node": node}

    @app.get(READY_PATH)
    async def readyz() -> JSONResponse:
        """200 while this web front serves the studio (its own state: whether workers are up is
        HAProxy's knowledge, and the page says so); 503 once it is shutting down."""
        content = {"ready": serving, "node": node}
        if not serving:
            content["reason"] = "shutting down"
        return JSONResponse(content, status_code=200 if serving else 503)

    guard_decoding(settings.max_upload_pixels)
    cache_dir = Path(get_upload_folder())
    janitor = CacheJanitor(cache_dir, settings.cache_max_bytes, settings.cache_max_age, settings.cache_sweep_interval,
                           max_inodes=settings.cache_max_inodes)
    jobs_client = runner = None
    if settings.jobs_url:
        jobs_client = JobsClient(settings.jobs_url, ca_file=settings.worker_queue_ca,
                                 cert_file=settings.worker_queue_cert)
        runner = JobRunner(jobs_client, node, cache_dir)
    studio = Studio(client, worker_info, node, cache_dir=cache_dir,
                    max_upload_bytes=settings.max_upload_bytes, max_upload_pixels=settings.max_upload_pixels,
                    max_images=settings.max_images, listen_grace=settings.listen_grace, jobs=runner)
    # With jobs, this front only follows them (the jobs service paces the workers): no limit of its own.
    concurrency = None if runner else settings.concurrency
    sign_in = settings.sign_in and jobs_client is not None
    studio_config = load_studio_config()
    adoption = Adoption(runner, studio.streams, settings.listen_grace) if runner else None
    demo = build_studio(
        studio,
        studio_config,
        load_examples(),
        max_images=settings.max_images,
        concurrency_limit=concurrency,
        job_page=JobPage(studio, runner) if runner else None,
        history=(HistoryPanel(jobs_client, cache_dir=cache_dir, resolution_name=studio_config.resolution_name)
                 if jobs_client else None),
        sign_out=sign_in,
        adoption=adoption,
    )
    # api_open=False: Gradio itself refuses a queued event called outside the queue (run/, api/).
    demo.queue(default_concurrency_limit=concurrency, max_size=settings.queue_max_size, api_open=False)
    install_upload_progress(BoundedUploadProgress())
    pacer = QueuePacer(demo._queue)  # Gradio's queue polls every 1 ms even when idle
    # Jobs in flight: events joined whose result their client has not yet been sent (waiting, running, sending).
    traffic.jobs = lambda: calls_of(demo, None)
    app.add_middleware(PaceQueue, pacer=pacer)
    secret = ClusterSecret.from_env()
    signing_in = SignIn(jobs_client, os.environ[CLUSTER_SECRET_ENV]) if sign_in and jobs_client else None
    if signing_in is not None:
        signing_in.pages(app)  # before the page's mount at /, which would take its paths
    if adoption is not None:  # the stream relay's: a call whose web front died goes on here
        adoption.route(app, demo)
    gr.mount_gradio_app(
        app,
        demo,
        path="/",
        server_name=settings.host,
        server_port=settings.port,
        root_path=settings.root_path or None,
        footer_links=["api", "settings"],
        css_paths=[CSS_PATH],
        theme=gr.themes.Soft(primary_hue="amber", neutral_hue="stone"),
        ssr_mode=False,
        # Only gr.Error messages reach clients; anything else could name server paths.
        show_error=False,
        max_file_size=settings.max_body_bytes,  # and RequestGuard counts the whole body
    )
    enforce_file_rules(demo)
    gradio_app = next(route.app for route in app.routes if isinstance(route, Mount))
    gradio_app.add_middleware(
        RequestGuard,
        max_body_bytes=settings.max_body_bytes,
        body_timeout=settings.body_timeout,
        routes=GradioRoutes(gradio_app.routes),
        events=lambda: demo.fns,
        queue=lambda: demo._queue,
        streams=studio.streams,
        awaited=AwaitedStreams(settings.listen_grace),
    )
    gradio_app.add_middleware(UploadFileLimit, max_files=settings.upload_max_files)  # outside RequestGuard
    if runner is not None:  # with jobs, a client's call may go on at another web front (a rolling restart)
        app.state.handoff = Handoff(lambda session: calls_of(demo, session), cache_dir,
                                    lambda session: session in demo._queue.pending_messages_per_session)
        app.add_middleware(HandOn, handoff=app.state.handoff)
        app.add_middleware(JobResultFiles, jobs=jobs_client, cache_dir=cache_dir)  # a result any front can serve
    if signing_in is not None:  # outside what acts for the page's user: they see the session it passes on
        signing_in.guard(app)
    app.add_middleware(TraceIds)  # every log line of a request names its id (a Gradio event's: studio.handlers)
    if secret is not None:  # outermost: a stranger's request reaches nothing, not even the counters
        app.add_middleware(RequireClusterSecret, secret=secret)
    return app


def calls_of(demo: gr.Blocks, session: str | None) -> int:
    """Gradio calls joined here and not yet answered, of ``session`` (None: of every session)."""
    pending = demo._queue.pending_event_ids_session
    return sum(map(len, pending.values())) if session is None else len(pending.get(session, ()))


def enforce_file_rules(demo: gr.Blocks) -> None:
    """Make a mounted app check files as ``launch()`` does: inputs only from user uploads.

    Gradio checks that a ``FileData`` path given as an input was uploaded by a user only
    once the Blocks are marked as launched, which ``mount_gradio_app`` never does: without
    this, a client could name any server file as an image input and read Gradio's copy.
    """
    demo.has_launched = True


def open_share_link(tunnel: ShareTunnel) -> None:
    """Open a Gradio share link (blocking; run it in a thread); a failure is only logged."""
    try:
        tunnel.open()
    except Exception as exc:  # the link is optional: the node serves locally anyway
        logger.warning("could not create a share link: %s", exc)


def main(argv: list[str] | None = None) -> int:
    """``python -m webui.web``: serve the web front with uvicorn until SIGTERM/SIGINT."""
    os.umask(PRIVATE_UMASK)  # its logs, uploads and images: this user's only
    settings = settings_from_cli(WebSettings, argv, "python -m webui.web")
    if settings is None:
        return 2
    configure_logging()  # text or JSON lines (PORTRAIT_LOG_FORMAT), each with its request's ids
    app = create_app(settings)
    tunnel = None
    if settings.share:
        local_host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
        tunnel = ShareTunnel(local_host, settings.port)
        threading.Thread(target=open_share_link, args=(tunnel,), name="share-link", daemon=True).start()
    try:
        config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level="info", proxy_headers=True,
                                log_config=uvicorn_log_config(), **settings.uvicorn_tls())
        handoff = getattr(app.state, "handoff", None)
        (HandoffServer(config, handoff) if handoff is not None else uvicorn.Server(config)).run()
    finally:
        if tunnel is not None:
            tunnel.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
