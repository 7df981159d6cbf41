"""The harness's own clients (``bench.harness.browser_client``) against a real web front and stand-in worker.

A load test is only as good as the client that judges each answer: the browser-protocol client must
take its own job's result, never another job's that shares the session's event stream, as the studio
page itself does (it routes every message by its ``event_id``).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bench.harness.browser_client import BrowserProtocolClient
from bench.harness.generation import Job
from bench.harness.processes import Processes, free_port
from bench.harness.waiting import wait_http

STANDIN = "standin:0.3"
"""A fixed-latency stand-in worker (the subject is the client, not the model)."""


@pytest.fixture(scope="module")
def web_url() -> Iterator[str]:
    """A web front that runs one job at a time (so its session's jobs complete in the order they joined)."""
    with Processes("harness-clients") as group:
        worker_port, web_port = free_port(), free_port()
        worker = group.start(["python", "-m", "webui.worker", "--port", str(worker_port), "--node", "harness-worker",
                              "--model", STANDIN], log_name="harness-worker")
        worker_url = f"http://127.0.0.1:{worker_port}"
        front = group.start(["python", "-m", "webui.web", "--port", str(web_port), "--node", "harness-front",
                             "--worker-queue", worker_url, "--concurrency", "1"], log_name="harness-front")
        wait_http(f"{worker_url}/readyz", proc=worker, timeout=120)
        web_url = f"http://127.0.0.1:{web_port}"
        wait_http(f"{web_url}/readyz", proc=front, timeout=120)
        yield web_url


@pytest.mark.parametrize("api_name", [None, "generate"])
def test_the_browser_client_takes_its_own_events_result_not_an_earlier_one(web_url: str, api_name: str | None) -> None:
    tab = BrowserProtocolClient(web_url, api_name=api_name)
    earlier = Job(prompt="an earlier call whose stream was lost", steps=2, width=256, height=256, seed=205)
    mine = Job(prompt="this call", steps=2, width=256, height=256, seed=200)
    try:
        tab.join(earlier)  # its result waits on the session's stream, ahead of the next job's
        reply = tab.generate(mine)
    finally:
        tab.close()
    assert reply.seed == mine.seed
