"""Fair share end to end: a jobs service (``python -m jobs``, one dispatch slot) in front of one stand-in worker
(``--model standin:0.2``, a fixed time per job) on an SQLite store. Account A floods the queue with 30 jobs, then
account B submits one (both with their API keys): B's job is the next to start once the worker is free, not the
31st. The order is read from the store's ``started_at`` (claim) times, never from wall-clock bounds. Also the
operator's side: ``python -m jobs accounts set-weight``.

Run under the cluster lock: ``flock /tmp/ph-cluster.lock python -m pytest -q tests/test_fair_share_jobs.py``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, select

from bench.harness.processes import Processes
from bench.harness.waiting import wait_until
from jobs.store import create_account, create_key, make_engine
from jobs.store.schema import jobs
from tests.jobs_service import JOB, WAIT, Site, accounts_cli, ready, start_site

FLOOD = 30
WORKERS = 1
"""Stand-in workers (the service's one dispatch slot keeps one busy)."""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    url = f"sqlite:///{tmp_path_factory.mktemp('fair-share') / 'jobs.sqlite3'}"
    with Processes("fair-share") as processes:
        yield ready(start_site(processes, "fair-share", url, 0.2))


@pytest.fixture(scope="module")
def store(site: Site) -> Iterator[Engine]:
    engine = make_engine(site.store_url)
    yield engine
    engine.dispose()


def bearer(store: Engine, name: str) -> dict[str, str]:
    create_account(store, name)
    return {"Authorization": f"Bearer {create_key(store, name, ['generate', 'history'])[1]}"}


def test_a_newcomer_s_job_starts_next_after_a_flood(site: Site, store: Engine) -> None:
    a, b = bearer(store, "flood-a"), bearer(store, "late-b")
    for n in range(FLOOD):
        assert site.post({**JOB, "seed": n}, **a).status_code == 202
    late = site.post({**JOB, "seed": 99}, **b)
    assert late.status_code == 202, late.text
    path = f"/v1/jobs/{late.json()['id']}"
    done = wait_until(lambda: job if (job := site.get(path, **b).json())["status"] in ("succeeded", "failed")
                      else None, "B's job finished", timeout=WAIT)
    assert done["status"] == "succeeded", done
    with store.connect() as connection:
        rows = connection.execute(select(jobs.c.id, jobs.c.created_at, jobs.c.started_at)).all()
    mine = next(row for row in rows if row.id == late.json()["id"])
    before = [row.id for row in rows if row.id != mine.id and row.started_at is not None
              and mine.created_at < row.started_at < mine.started_at]
    queued_then = sum(1 for row in rows if row.id != mine.id and (row.started_at is None
                                                                   or row.started_at > mine.created_at))
    assert queued_then >= FLOOD // 2, "the flood was over before B submitted: the test shows nothing"
    assert len(before) <= WORKERS, (f"{len(before)} of A's jobs started after B's was accepted and before it "
                                    f"(at most {WORKERS}, one per worker, under fair share)")


def test_an_operator_sets_an_account_s_weight(site: Site, store: Engine) -> None:
    create_account(store, "weighted")
    done = accounts_cli(site.store_url, "set-weight", "weighted", "2")
    assert (done.returncode, done.stdout.strip()) == (0, "account weighted: weight 2"), done.stderr
    listed = accounts_cli(site.store_url, "list").stdout.splitlines()
    assert any(line.startswith("weighted ") and " weight 2 " in line for line in listed), listed
    refused = accounts_cli(site.store_url, "set-weight", "weighted", "0")
    assert refused.returncode == 1 and "weight is a number above 0" in refused.stderr, refused.stderr
    missing = accounts_cli(site.store_url, "set-weight", "nobody", "2")
    assert missing.returncode == 1 and "nobody" in missing.stderr and "Traceback" not in missing.stderr
