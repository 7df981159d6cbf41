"""A node's web front: the studio page (Gradio 6) mounted in FastAPI, health routes, and main.

    python -m webui.web --port 7860 --worker-url http://127.0.0.1:7960 --node-id web-1

``create_app`` builds the FastAPI app: ``GET /healthz`` (the process is alive), ``GET /readyz``
(200 when the worker URL answers a ready ``/readyz``; 503 with the reason otherwise; the
answer is cached for half a second) and the Gradio page at ``/`` (API under ``/gradio_api/``).
Behind a proxy, Gradio builds its URLs from ``X-Forwarded-Host``/``-Proto`` or the ``Host``
header; set ``--root-path`` when the proxy serves the page under a sub-path.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import gradio as gr
import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from gradio import networking
from gradio.utils import get_upload_folder
from pydantic_settings import CliApp

from webui.settings import WebSettings
from webui.ui import CSS_PATH, Studio, build_studio, load_examples, load_studio_config
from webui.worker_client import ReadinessCache, WorkerClient

logger = logging.getLogger(__name__)

READINESS_TTL = 0.5
"""Seconds a worker ``/readyz`` answer is reused."""


def create_app(settings: WebSettings) -> FastAPI:
    """The web front's ASGI app for ``settings``; its worker client closes on shutdown."""
    node_id = settings.resolved_node_id()
    client = WorkerClient(
        settings.worker_url,
        max_attempts=settings.max_attempts,
        retry_delay=settings.retry_delay,
        timeout=settings.request_timeout,
    )
    readiness = ReadinessCache(client, ttl=READINESS_TTL)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        logger.info("web front %s serving the studio; workers at %s", node_id, settings.worker_url)
        yield
        await client.aclose()

    app = FastAPI(title="portrait-ha web front", lifespan=lifespan, docs_url=None, redoc_url=None)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """The process is up and serving HTTP."""
        return {"status": "ok", "node": node_id}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        """200 when the worker(s) behind ``worker_url`` can take jobs, else 503 with a reason."""
        ready, body = await readiness.get()
        content = {"ready": ready, "node": node_id, "worker_url": settings.worker_url, "worker": body}
        if not ready:
            content["reason"] = body.get("reason") or body.get("detail") or "the worker is not ready"
        return JSONResponse(content, status_code=200 if ready else 503)

    studio = Studio(client, readiness, node_id, cache_dir=Path(get_upload_folder()))
    demo = build_studio(
        studio,
        load_studio_config(),
        load_examples(),
        max_images=settings.max_images,
        concurrency_limit=settings.concurrency,
    )
    demo.queue(default_concurrency_limit=settings.concurrency, max_size=settings.queue_max_size)
    return gr.mount_gradio_app(
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
    )


def start_share_link(host: str, port: int) -> threading.Thread:
    """Open a Gradio share tunnel to ``host:port`` in the background; logs the public URL."""

    def run() -> None:
        try:
            url = networking.setup_tunnel(host, port, secrets.token_urlsafe(32), None, None)
        except Exception as exc:  # the tunnel is optional: the node serves locally anyway
            logger.warning("could not create a share link: %s", exc)
        else:
            logger.info("public share link: %s", url)

    thread = threading.Thread(target=run, name="share-tunnel", daemon=True)
    thread.start()
    return thread


def main() -> None:
    """``python -m webui.web``: serve the web front with uvicorn."""
    settings = CliApp.run(WebSettings)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(settings)
    if settings.share:
        start_share_link(settings.host, settings.port)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="info", proxy_headers=True)


if __name__ == "__main__":
    main()
