"""History on the jobs API: listing with keyset paging and filters, per-owner delete with a tombstone, and
thumbnails; against the real service (``python -m jobs``, uvicorn, SQLite) and a stand-in worker.

Jobs to list are seeded through the store the service reads (the same file); the deleted job's rows are
checked there too. Run under the cluster lock: ``flock /tmp/ph-cluster.lock python -m pytest -q
tests/test_jobs_history.py``.
"""

from __future__ import annotations

import base64
import hashlib
import io
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from PIL import Image as PillowImage
from sqlalchemy import Engine, func, select

from bench.harness.processes import Processes
from jobs.store import Image, finish, make_engine, submit, submit_held
from jobs.store.schema import job_events, jobs, results, thumbnails, tombstones, webhook_deliveries
from tests.jobs_service import JOB, PART, WAIT, Site, ready, start_site

START = datetime.fromisoformat("2026-11-01T09:00:00+00:00")
"""The seeded jobs are accepted one hour apart from here."""
SEEDED = 25
PRESETS = ("Headshot", "Editorial")


def login(user: str) -> dict[str, str]:
    """The ``Authorization`` a user logged in to the site with (the service trusts the name, as HAProxy checked it)."""
    return {**PART, "Authorization": "Basic " + base64.b64encode(f"{user}:secret".encode()).decode()}


def png(width: int = 320, height: int = 400) -> bytes:
    buffer = io.BytesIO()
    PillowImage.new("RGB", (width, height), (180, 120, 90)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    url = f"sqlite:///{tmp_path_factory.mktemp('history') / 'jobs.sqlite3'}"
    with Processes("jobs-history") as processes:
        yield ready(start_site(processes, "history", url, 0.3, "--site-login"))


@pytest.fixture(scope="module")
def store(site: Site) -> Iterator[Engine]:
    engine = make_engine(site.store_url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def seeded(store: Engine) -> list[str]:
    """``SEEDED`` finished jobs of alice's, oldest first (prompt "portrait number N", presets alternating), and
    one of bob's among them."""
    ids = []
    for number in range(SEEDED):
        at = START + timedelta(hours=number)
        input = {**JOB, "prompt": f"Portrait number {number}", "preset": PRESETS[number % 2]}
        job = submit_held(store, input, "seed", owner="alice", now=at)
        finish(store, job.id, [Image(png(64, 64), width=64, height=64)], now=at)
        ids.append(job.id)
        if number == 3:
            submit_held(store, {**JOB, "prompt": "Portrait number 3"}, "seed", owner="bob", now=at)
    return ids


def listing(site: Site, user: str, **query: Any) -> dict[str, Any]:
    answer = httpx.get(f"{site.service.url}/v1/jobs", params=query, headers=login(user), timeout=WAIT)
    assert answer.status_code == 200, answer.text
    return answer.json()


def every_page(site: Site, user: str, **query: Any) -> list[list[str]]:
    """The ids of each page, following ``next`` (which must keep the filter)."""
    pages, page = [], listing(site, user, **query)
    while True:
        pages.append([job["id"] for job in page["jobs"]])
        if page["next"] is None:
            return pages
        answer = httpx.get(site.service.url + page["next"], headers=login(user), timeout=WAIT)
        page = answer.json()


def test_pages_follow_the_cursor_newest_first_and_a_new_job_shifts_nothing(site: Site, seeded: list[str],
                                                                              store: Engine) -> None:
    first = listing(site, "alice", limit=10)
    assert [job["id"] for job in first["jobs"]] == seeded[::-1][:10]
    submit(store, {**JOB, "prompt": "accepted between two pages"}, owner="carol")
    submit_held(store, {**JOB, "prompt": "alice's newest"}, "seed", owner="alice", now=START - timedelta(days=1))
    following = httpx.get(site.service.url + first["next"], headers=login("alice"), timeout=WAIT).json()
    assert [job["id"] for job in following["jobs"]] == seeded[::-1][10:20]
    assert [job["input"]["prompt"] for job in listing(site, "bob")["jobs"]] == ["Portrait number 3"]


def test_filters_by_date_range_preset_and_prompt_text_across_pages(site: Site, seeded: list[str]) -> None:
    window = every_page(site, "alice", since=(START + timedelta(hours=5)).isoformat(),
                        until=(START + timedelta(hours=17)).isoformat(), limit=5)
    assert window == [seeded[16:11:-1], seeded[11:6:-1], seeded[6:4:-1]]
    headshots = [job_id for page in every_page(site, "alice", preset="Headshot", limit=4) for job_id in page]
    assert headshots == seeded[::-2]
    found = every_page(site, "alice", q="NUMBER 1", limit=3)
    assert [job_id for page in found for job_id in page] == [seeded[n] for n in (19, 18, 17, 16, 15, 14, 13, 12,
                                                                                     11, 10, 1)]
    assert every_page(site, "alice", q="number 3", since="2026-11-01", until="2026-11-02") == [[seeded[3]]]
    refused = httpx.get(f"{site.service.url}/v1/jobs", params={"since": "last tuesday"}, headers=PART, timeout=WAIT)
    assert refused.status_code == 422 and refused.json()["fields"][0]["field"] == "since"


def rows_of(store: Engine, job_id: str) -> dict[str, int]:
    with store.connect() as connection:
        return {table.name: connection.execute(select(func.count()).select_from(table).where(
            (table.c.id if table is jobs else table.c.job_id) == job_id)).scalar_one()
            for table in (jobs, results, thumbnails, job_events, webhook_deliveries)}


def test_the_owner_deletes_a_job_and_its_bytes_everywhere_then_it_is_gone(site: Site, store: Engine) -> None:
    hooked = {**JOB, "prompt": "to delete", "webhook": "https://hooks.example.com/done"}
    job = submit_held(store, hooked, "seed", owner="alice")
    finish(store, job.id, [Image(png(), width=320, height=400)])
    assert all(count > 0 for count in rows_of(store, job.id).values()), rows_of(store, job.id)
    path = f"{site.service.url}/v1/jobs/{job.id}"
    by_bob = httpx.delete(path, headers=login("bob"), timeout=WAIT)
    assert by_bob.status_code == 404 and by_bob.json()["error"] == "job_not_found"
    assert rows_of(store, job.id)["jobs"] == 1
    assert httpx.delete(path, headers=login("alice"), timeout=WAIT).status_code == 204
    assert set(rows_of(store, job.id).values()) == {0}
    with store.connect() as connection:
        assert connection.execute(select(tombstones.c.owner).where(tombstones.c.id == job.id)).scalar_one() == "alice"
    for answer in (httpx.get(path, headers=login("alice"), timeout=WAIT),
                   httpx.get(f"{path}/thumbnails/0", headers=login("alice"), timeout=WAIT),
                   httpx.delete(path, headers=login("alice"), timeout=WAIT)):
        assert answer.status_code == 410 and answer.json()["error"] == "job_expired"
    assert httpx.delete(path, headers=login("bob"), timeout=WAIT).status_code == 404


def test_a_running_job_is_not_deleted(site: Site, store: Engine) -> None:
    job = submit_held(store, {**JOB, "prompt": "still running"}, "seed", owner="alice")
    answer = httpx.delete(f"{site.service.url}/v1/jobs/{job.id}", headers=login("alice"), timeout=WAIT)
    assert answer.status_code == 409 and "cancel it first" in answer.json()["detail"]
    assert rows_of(store, job.id)["jobs"] == 1


def test_a_finished_job_has_one_cached_webp_thumbnail_per_result(site: Site, store: Engine) -> None:
    accepted = site.post({**JOB, "width": 128, "height": 192, "preset": "Headshot"}, **login("dora"))
    job = site.finished(accepted.json()["id"])
    assert job["status"] == "succeeded" and job["input"]["preset"] == "Headshot"
    assert rows_of(store, job["id"])["thumbnails"] == 1
    answer = site.get(f"/v1/jobs/{job['id']}/thumbnails/0")
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/webp"
    assert answer.headers["etag"] == f'"{hashlib.sha256(answer.content).hexdigest()}"'
    assert "immutable" in answer.headers["cache-control"]
    with PillowImage.open(io.BytesIO(answer.content)) as small:
        assert small.format == "WEBP" and max(small.size) <= 256
    assert site.get(f"/v1/jobs/{job['id']}/thumbnails/0", **{"If-None-Match": answer.headers["etag"]}
                    ).status_code == 304
    assert site.get(f"/v1/jobs/{job['id']}/thumbnails/1").status_code == 404
    assert [entry["id"] for entry in listing(site, "dora")["jobs"]] == [job["id"]]
