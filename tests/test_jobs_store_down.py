"""A job store that does not answer: the jobs API says so with a 503 and ``Retry-After`` (which clients resend),
never a 500, on every kind of route. In process, on a PostgreSQL URL whose port nothing listens on (the driver's
``OperationalError`` at once, as from a store cut off with its balancer host once its connection times out).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from bench.harness.processes import free_port
from jobs.api import JobsApi, create_app
from jobs.store import make_engine
from webui.contract import WORKER_JOBS_PREFIX

PREFIX = "/v1/jobs"


@pytest.fixture(scope="module")
def api() -> Iterator[TestClient]:
    engine = make_engine(f"postgresql+psycopg://portrait@127.0.0.1:{free_port()}/jobs")
    with TestClient(create_app(JobsApi(engine)), raise_server_exceptions=False) as client:
        yield client
    engine.dispose()


@pytest.mark.parametrize(("method", "path", "body"), [
    ("POST", PREFIX, {"prompt": "a studio portrait", "width": 64, "height": 64, "steps": 4}),
    ("GET", PREFIX, None),
    ("GET", f"{PREFIX}/j_0123456789abcdefghijkl", None),
    ("GET", f"{PREFIX}/j_0123456789abcdefghijkl/events", None),
    ("POST", f"{PREFIX}/j_0123456789abcdefghijkl/cancel", None),
    ("POST", f"{WORKER_JOBS_PREFIX}/j_0123456789abcdefghijkl/end", {"status": "canceled"}),
])
def test_a_store_that_does_not_answer_is_a_503_to_try_again(api: TestClient, method: str, path: str,
                                                            body: dict | None) -> None:
    answer = api.request(method, path, json=body)
    assert answer.status_code == 503, answer.text
    assert answer.headers["Retry-After"] == "2"
    assert answer.json() == {"error": "store_unavailable", "fields": [],
                             "detail": "The job store does not answer; try again in a few seconds."}
