"""Per-account retention in the job store, on SQLite and on a real PostgreSQL server (each test runs on both):
``set_retention`` re-dates the account's jobs already kept and a new job gets the account's days, so the janitor's
sweep deletes them on the account's schedule, not the service's; ``strip_expired_inputs`` removes the photo of the
account's finished jobs older than ``inputs_days`` and leaves everything else (other accounts, younger or
unfinished jobs, the job's other fields).

Run under the cluster lock (the PostgreSQL half starts a server):
``flock /tmp/ph-cluster.lock python -m pytest -q tests/test_account_retention.py``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine

from jobs.errors import JobGone
from jobs.store import (
    cancel,
    create_account,
    get,
    set_retention,
    strip_expired_inputs,
    submit,
    sweep_expired,
)

NOON = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
DEFAULT = timedelta(days=30)
"""The service's retention in these tests."""


def retouch(engine: Engine, owner: str, days_ago: float, finished: bool = True) -> str:
    """The id of a retouch job of ``owner`` made ``days_ago`` days before noon (canceled: finished)."""
    at = NOON - timedelta(days=days_ago)
    job = submit(engine, {"prompt": "p", "init_image": "UE5H", "strength": 0.5}, owner=owner, retention=DEFAULT,
                 now=at)[0]
    if finished:
        cancel(engine, job.id, now=at)
    return job.id


def test_jobs_are_kept_the_accounts_days_not_the_services(job_store: Engine) -> None:
    short, long = create_account(job_store, "studio-short"), create_account(job_store, "studio-long")
    other = create_account(job_store, "studio-other")
    old_short, old_long = retouch(job_store, short.id, 10), retouch(job_store, long.id, 40)
    old_other = retouch(job_store, other.id, 10)
    young_short = retouch(job_store, short.id, 2)
    assert set_retention(job_store, "studio-short", 7, None).results_days == 7
    set_retention(job_store, "studio-long", 90, None)
    fresh = submit(job_store, {"prompt": "p"}, owner=long.id, retention=DEFAULT, now=NOON)[0]
    assert fresh.expires_at == NOON + timedelta(days=90)
    assert get(job_store, young_short).expires_at == NOON - timedelta(days=2) + timedelta(days=7)
    assert sweep_expired(job_store, now=NOON) == 1
    with pytest.raises(JobGone):
        get(job_store, old_short)  # 10 days old, the account keeps 7
    assert get(job_store, old_long).status == "canceled"  # 40 days old, past the service's 30: the account's 90
    assert get(job_store, old_other).status == "canceled" and get(job_store, young_short).status == "canceled"
    with pytest.raises(ValueError, match="results-days"):
        set_retention(job_store, "studio-short", 0, None)


def test_photos_past_the_accounts_days_are_removed_and_the_jobs_kept(job_store: Engine) -> None:
    account, other = create_account(job_store, "studio-a"), create_account(job_store, "studio-b")
    set_retention(job_store, "studio-a", None, 7)
    old, young = retouch(job_store, account.id, 8), retouch(job_store, account.id, 6)
    waiting = retouch(job_store, account.id, 8, finished=False)
    others = retouch(job_store, other.id, 8)
    assert strip_expired_inputs(job_store, now=NOON, batch=1) == 1
    assert get(job_store, old).input == {"prompt": "p", "strength": 0.5}
    assert [get(job_store, job).input["init_image"] for job in (young, waiting, others)] == ["UE5H"] * 3
    assert strip_expired_inputs(job_store, now=NOON) == 0  # done once
