"""The web front's Gradio queue: Gradio's pace (1 ms) while clients come, a slow one when nobody is there.

A real Gradio ``Blocks`` queue and the web front's middleware on a Starlette app; what an idle web front
costs, measured, is in the README (``webui/web/queue_pacer.py``)."""

from __future__ import annotations

import asyncio
import time

import gradio as gr
import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from webui.contract import HEALTH_PATH, READY_PATH
from webui.web.queue_pacer import PaceQueue, QueuePacer

IDLE_AFTER = 0.05
IDLE_POLL = 0.02


def gradio_queue():
    with gr.Blocks() as demo:
        gr.Button()
    demo.queue()
    return demo._queue


def paces(queue) -> tuple[float, float]:
    return queue.sleep_when_free, queue.progress_update_sleep_when_free


def test_the_queue_slows_down_only_when_no_request_came_and_no_job_waits_or_runs() -> None:
    queue = gradio_queue()
    gradios = paces(queue)
    assert gradios == (0.001, 0.01)  # Gradio 6 on Linux: what the pacer keeps while clients come
    pacer = QueuePacer(queue, idle_after=IDLE_AFTER, idle_poll=IDLE_POLL)
    pacer.check()
    assert paces(queue) == gradios  # a request may come any moment: not idle yet
    time.sleep(IDLE_AFTER + 0.01)
    queue.active_jobs = [[object()], None]  # a job runs: its progress must go out at Gradio's pace
    pacer.check()
    assert paces(queue) == gradios
    queue.active_jobs = [None, None]
    pacer.check()
    assert paces(queue) == (IDLE_POLL, IDLE_POLL)
    pacer.request_came()
    assert paces(queue) == gradios
    pacer.check()
    assert paces(queue) == gradios  # the request was just now


def test_client_requests_set_gradios_pace_and_probes_do_not() -> None:
    queue = gradio_queue()
    pacer = QueuePacer(queue, idle_after=IDLE_AFTER, idle_poll=IDLE_POLL)
    routes = [Route(path, lambda request: PlainTextResponse("ok")) for path in ("/", HEALTH_PATH, READY_PATH)]
    app = PaceQueue(Starlette(routes=routes), pacer)

    async def scenario() -> list[tuple[float, float]]:
        seen = []
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://front") as client:
            await asyncio.sleep(IDLE_AFTER + 0.01)
            pacer.check()
            for path in (HEALTH_PATH, READY_PATH, "/"):
                assert (await client.get(path)).status_code == 200
                seen.append(paces(queue))
        return seen

    assert asyncio.run(scenario()) == [(IDLE_POLL, IDLE_POLL), (IDLE_POLL, IDLE_POLL), (0.001, 0.01)]


def test_the_pacer_refuses_a_pace_that_is_not_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        QueuePacer(gradio_queue(), idle_after=0)


def test_the_web_front_paces_its_own_queue_from_its_clients_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    """``create_app`` installs the pacer on the studio's queue: idle, a probe leaves it slow, a page load wakes it."""
    from PIL import Image

    from webui.settings import WebSettings
    from webui.web.app import create_app

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # create_app sets PIL's guard for all
    app = create_app(WebSettings(worker_queue="http://127.0.0.1:9", node="pacer"))
    pacer = next(middleware.kwargs["pacer"] for middleware in app.user_middleware if middleware.cls is PaceQueue)
    gradio_pace = pacer.active_polls[0]
    pacer.last_request = time.monotonic() - pacer.idle_after
    pacer.check()
    assert pacer.queue.sleep_when_free == pacer.idle_poll > gradio_pace

    async def get(path: str) -> int:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://front") as client:
            return (await client.get(path)).status_code

    assert asyncio.run(get(HEALTH_PATH)) == 200 and pacer.idle
    assert asyncio.run(get("/config")) == 200
    assert not pacer.idle and pacer.queue.sleep_when_free == gradio_pace
