"""Quotas on ``POST /v1/jobs`` end to end: two jobs services (``python -m jobs``) on one SQLite store, one
stand-in worker (``--model standin:2``), accounts limited with ``python -m jobs accounts set-limits``. The image
past an account's daily quota is a 429 on either service (the count is the store's) with ``Retry-After`` until
00:00 UTC and the ``RateLimit-Policy`` / ``RateLimit`` fields; a resend of an accepted job still passes; an account
at its most jobs at once is a 429 until one ends; an account without limits is unaffected. Each service's
``/metrics`` counts every account's jobs, images, GPU seconds and refusals apart, the keyless ones as ``anonymous``.

Run under the cluster lock: ``flock /tmp/ph-cluster.lock python -m pytest -q tests/test_quotas_api.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from bench.harness.processes import Processes
from bench.harness.waiting import wait_until
from tests.jobs_service import JOB, PART, WAIT, Part, accounts_cli, service, worker
from tests.test_metrics_exported import samples


class Store:
    def __init__(self, url: str, first: Part, second: Part) -> None:
        self.url, self.first, self.second = url, first, second

    def key(self, account: str, *limits: str) -> str:
        assert accounts_cli(self.url, "create", account).returncode == 0
        if limits:
            set_to = accounts_cli(self.url, "set-limits", account, *limits)
            assert set_to.returncode == 0, set_to.stderr
        made = accounts_cli(self.url, "create-key", account, "--scope=generate", "--scope=history")
        assert made.returncode == 0, made.stderr
        return made.stdout.strip()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    url = f"sqlite:///{tmp_path_factory.mktemp('quotas') / 'jobs.sqlite3'}"
    assert accounts_cli(url, "list").returncode == 0  # migrates the new store
    with Processes("quotas-api") as processes:
        part = worker(processes, "quotas-worker", 2).start()
        first = service(processes, "quotas-first", part.url, url).start()
        second = service(processes, "quotas-second", part.url, url).start()
        part.ready("/readyz")
        first.ready("/healthz")
        second.ready("/healthz")
        yield Store(url, first, second)


def post(part: Part, key: str, images: int = 1, **headers: str) -> httpx.Response:
    return httpx.post(part.url + "/v1/jobs", json={**JOB, "num_images": images},
                      headers={**PART, "Authorization": f"Bearer {key}", **headers}, timeout=WAIT)


def account_usage(store: Store) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Both services' per-account samples, summed (each counts the runs it held and the refusals it answered)."""
    summed: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for part in (store.first, store.second):
        for sample, value in samples(httpx.get(part.url + "/metrics", timeout=WAIT).text).items():
            if sample[0].startswith("portrait_jobs_account_"):
                summed[sample] = summed.get(sample, 0) + value
    return summed


def test_metrics_count_each_account_s_jobs_images_gpu_seconds_and_refusals(store: Store) -> None:
    # First in the module: its jobs wait behind no others on the one 2 s worker.
    big, small = store.key("metrics-big"), store.key("metrics-small", "--daily-images", "1")
    sent = [(big, post(store.first, big, 2)), (small, post(store.second, small, 1))]
    assert post(store.first, small, 1).status_code == 429  # past its daily image
    keyless = httpx.post(store.second.url + "/v1/jobs", json=JOB, headers=PART, timeout=WAIT)
    sent.append((None, keyless))
    for key, answer in sent:
        assert answer.status_code == 202, answer.text
        auth = {**PART, "Authorization": f"Bearer {key}"} if key else PART
        url = f"{store.first.url}/v1/jobs/{answer.json()['id']}"
        wait_until(lambda url=url, auth=auth: httpx.get(url, headers=auth, timeout=WAIT).json()["status"]
                   == "succeeded", "the job succeeded", timeout=WAIT)
    usage = account_usage(store)

    def value(name: str, account: str, **labels: str) -> float:
        return usage[(f"portrait_jobs_account_{name}_total", tuple(sorted({"account": account, **labels}.items())))]

    assert [value("jobs", account, status="succeeded") for account in ("metrics-big", "metrics-small", "anonymous")
            ] == [1, 1, 1]
    assert [value("images", account) for account in ("metrics-big", "metrics-small", "anonymous")] == [2, 1, 1]
    assert value("gpu_seconds", "metrics-big") >= 2 and value("gpu_seconds", "metrics-small") >= 2  # standin:2
    assert value("refusals", "metrics-small", reason="daily") == 1
    assert value("refusals", "metrics-big", reason="daily") == 0
    accounts = {dict(labels)["account"] for _, labels in usage}
    assert {"metrics-big", "metrics-small", "anonymous"} <= accounts and not any(a.startswith("acc_") for a in accounts)


def test_the_image_past_the_daily_quota_is_refused_on_every_service(store: Store) -> None:
    key = store.key("studio-daily", "--daily-images", "3")
    first = post(store.first, key, 2, **{"Idempotency-Key": "first"})
    assert first.status_code == 202, first.text
    assert post(store.second, key, 1).status_code == 202  # 3 of 3, counted across both services
    before = datetime.now(UTC)
    refused = post(store.first, key, 1)
    midnight = datetime.combine(before.date() + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
    assert refused.status_code == 429
    assert refused.json() == {"error": "quota_exceeded", "fields": [],
                              "detail": "Daily quota of 3 images reached; resets at 00:00 UTC."}
    wait = int(refused.headers["Retry-After"])
    assert (midnight - before).total_seconds() - WAIT <= wait <= (midnight - before).total_seconds() + 2
    assert refused.headers["RateLimit-Policy"] == '"daily";q=3;w=86400'
    assert refused.headers["RateLimit"] == f'"daily";r=0;t={wait}'
    assert post(store.second, key, 1).status_code == 429
    again = post(store.second, key, 2, **{"Idempotency-Key": "first"})  # a resend of an accepted job
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]


def test_an_account_at_its_most_jobs_at_once_waits_for_one_to_end(store: Store) -> None:
    key = store.key("studio-busy", "--max-running", "1")
    running = post(store.first, key)
    assert running.status_code == 202, running.text
    refused = post(store.second, key)  # the first takes 2 s on the worker: still queued or running
    assert refused.status_code == 429 and refused.json()["error"] == "quota_exceeded"
    assert refused.headers["Retry-After"] == "5"
    assert refused.headers["RateLimit-Policy"] == '"concurrency";q=1'
    assert refused.headers["RateLimit"] == '"concurrency";r=0;t=5'
    job = running.json()["id"]
    auth = {**PART, "Authorization": f"Bearer {key}"}
    assert httpx.post(f"{store.first.url}/v1/jobs/{job}/cancel", headers=auth, timeout=WAIT).status_code == 200
    wait_until(lambda: httpx.get(f"{store.first.url}/v1/jobs/{job}", headers=auth, timeout=WAIT).json()["status"]
               in ("canceled", "succeeded"), "the first job ended", timeout=WAIT)
    assert post(store.second, key).status_code == 202  # one ended: room for the next


def test_an_account_without_limits_is_unaffected(store: Store) -> None:
    key = store.key("studio-free")
    assert [post(store.first, key, 4).status_code for _ in range(3)] == [202, 202, 202]
