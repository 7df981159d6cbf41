"""Quota usage in the job store, on SQLite and on a real PostgreSQL server (each test runs on both): an account's
images since 00:00 UTC (``num_images``, jobs that failed or were canceled before starting left out) and its jobs
queued or running, its members' site logins' jobs counted with its keys' (and a login held to each account it is a
member of); no usage for an account without limits, nor for a resend of one of its jobs.

Run under the cluster lock (the PostgreSQL half starts a server):
``flock /tmp/ph-cluster.lock python -m pytest -q tests/test_quotas_store.py``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine

from jobs.store import add_member, cancel, claim_next, create_account, fail, set_limits, submit
from jobs.store.quotas import Usage, quota_usage

NOON = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


def job(images: int) -> dict:
    return {"prompt": "a studio portrait", "num_images": images}


def test_images_since_midnight_and_active_jobs_are_counted(job_store: Engine) -> None:
    account = create_account(job_store, "studio-a")
    other = create_account(job_store, "studio-b")
    set_limits(job_store, "studio-a", max_running=2, daily_images=10)
    submit(job_store, job(4), owner=account.id, now=NOON - timedelta(hours=13))  # yesterday: active, not today
    submit(job_store, job(3), owner=account.id, now=NOON)
    submit(job_store, {"prompt": "no count given"}, owner=account.id, now=NOON)  # counts as 1
    never_started = submit(job_store, job(2), owner=account.id, now=NOON)[0]
    cancel(job_store, never_started.id, now=NOON)
    ran = claim_next(job_store, "dispatcher-1", now=NOON)  # the oldest: yesterday's
    started = claim_next(job_store, "dispatcher-1", now=NOON)  # today's 3 images: they ran, then failed
    assert ran is not None and started is not None and started.input["num_images"] == 3
    fail(job_store, started.id, "the worker stopped", now=NOON)
    submit(job_store, job(5), owner=other.id, now=NOON)  # another account's
    assert quota_usage(job_store, account.id, NOON) == [Usage(2, 10, active=2, images_today=4, account="studio-a")]
    assert quota_usage(job_store, account.id, NOON + timedelta(hours=12))[0].images_today == 0  # the next day


def test_no_usage_without_limits_or_for_a_resend(job_store: Engine) -> None:
    account = create_account(job_store, "studio-a")
    submit(job_store, job(1), owner=account.id, idempotency_key="k1", body_hash="h1", now=NOON)
    assert quota_usage(job_store, account.id, NOON) == []
    assert quota_usage(job_store, "a site login", NOON) == []
    set_limits(job_store, "studio-a", max_running=None, daily_images=1)
    assert quota_usage(job_store, account.id, NOON, idempotency_key="k1") == []
    assert quota_usage(job_store, account.id, NOON, idempotency_key="k2") == [Usage(None, 1, 1, 1, "studio-a")]
    with pytest.raises(ValueError, match="daily-images"):
        set_limits(job_store, "studio-a", max_running=None, daily_images=0)


def test_a_members_login_jobs_count_toward_the_account(job_store: Engine) -> None:
    account = create_account(job_store, "studio-a")
    create_account(job_store, "studio-b")
    set_limits(job_store, "studio-a", max_running=None, daily_images=10)
    set_limits(job_store, "studio-b", max_running=3, daily_images=None)
    add_member(job_store, "studio-a", "alice")
    add_member(job_store, "studio-a", "bob")
    add_member(job_store, "studio-b", "bob")
    submit(job_store, job(2), owner=account.id, now=NOON)  # the account's API key
    submit(job_store, job(3), owner="alice", now=NOON)  # a member's page
    submit(job_store, job(4), owner="carol", now=NOON)  # a login of no account
    assert quota_usage(job_store, "alice", NOON) == [Usage(None, 10, 2, 5, "studio-a")]
    assert quota_usage(job_store, account.id, NOON) == [Usage(None, 10, 2, 5, "studio-a")]
    assert quota_usage(job_store, "bob", NOON) == [Usage(None, 10, 2, 5, "studio-a"), Usage(3, None, 0, 0, "studio-b")]
    assert quota_usage(job_store, "carol", NOON) == []
