"""Accounts, members and API keys in the job store, on SQLite and on a real PostgreSQL server (each test runs on
both): a key is shown once and stored only as its hash, found by its hash and by its visible prefix, revoked once;
its last-used time is written at most once a minute; ``KeyCache`` (the jobs service's check) trusts a look-up for
its cache time only, on an injected clock, so a revoked key is refused once that passed.

Run under the cluster lock (the PostgreSQL half starts a server):
``flock /tmp/ph-cluster.lock python -m pytest -q tests/test_accounts_store.py``.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import Engine, select

from jobs.api.auth import KeyCache
from jobs.contract import API_KEY_PREFIX
from jobs.errors import AccountExists, AccountNotFound, ApiKeyNotFound, MemberNotFound
from jobs.store import (
    add_member,
    create_account,
    create_key,
    find_key,
    key_by_prefix,
    key_hash,
    list_keys,
    members,
    remove_member,
    revoke_key,
    touch_key,
)
from jobs.store.records import utc_now
from jobs.store.schema import api_keys
from webui.worker.job_parsing import ApiError


def stored_rows(engine: Engine) -> list[dict]:
    with engine.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(select(api_keys))]


def test_a_key_is_stored_only_as_its_hash_and_found_by_hash_and_prefix(job_store: Engine) -> None:
    account = create_account(job_store, "studio-a")
    record, key = create_key(job_store, "studio-a", ["history", "generate"], label="render farm")
    assert key.startswith(API_KEY_PREFIX) and len(key) == len(API_KEY_PREFIX) + 43
    assert record.prefix == key[:16] and record.scopes == ("generate", "history")
    [row] = stored_rows(job_store)
    assert row["hash"] == key_hash(key) != key
    assert not any(key in str(value) for value in row.values())  # the key itself is in no column
    assert find_key(job_store, key).id == record.id and find_key(job_store, key).account_id == account.id
    assert find_key(job_store, key + "x") is None and find_key(job_store, key[:-1]) is None
    assert key_by_prefix(job_store, record.prefix + "…").id == record.id  # as list-keys shows it
    assert key_by_prefix(job_store, record.id).prefix == record.prefix
    with pytest.raises(ApiKeyNotFound):
        key_by_prefix(job_store, API_KEY_PREFIX + "nothing_")
    second = create_key(job_store, "studio-a", ["admin"])[1]
    assert second != key and [k.label for k in list_keys(job_store, "studio-a")] == ["render farm", None]


def test_revoking_a_key_keeps_its_record_and_first_revocation_time(job_store: Engine) -> None:
    create_account(job_store, "studio-a")
    record, key = create_key(job_store, "studio-a", ["generate"])
    first = revoke_key(job_store, record.prefix, now=utc_now() - timedelta(hours=1))
    again = revoke_key(job_store, record.prefix)
    assert first.revoked_at is not None and again.revoked_at == first.revoked_at
    assert find_key(job_store, key).revoked_at == first.revoked_at


def test_accounts_and_members_are_checked(job_store: Engine) -> None:
    create_account(job_store, "studio-a")
    with pytest.raises(AccountExists):
        create_account(job_store, "studio-a")
    with pytest.raises(AccountNotFound):
        create_key(job_store, "studio-b", ["generate"])
    with pytest.raises(ValueError, match="scopes"):
        create_key(job_store, "studio-a", ["everything"])
    add_member(job_store, "studio-a", "alice", "admin")
    add_member(job_store, "studio-a", "bob")
    add_member(job_store, "studio-a", "bob", "admin")  # a member already: the role changes
    assert [(m.user, m.role) for m in members(job_store, "studio-a")] == [("alice", "admin"), ("bob", "admin")]
    with pytest.raises(ValueError, match="role"):
        add_member(job_store, "studio-a", "carol", "owner")
    remove_member(job_store, "studio-a", "alice")
    with pytest.raises(MemberNotFound):
        remove_member(job_store, "studio-a", "alice")
    assert [m.user for m in members(job_store, "studio-a")] == ["bob"]


def test_last_used_is_written_at_most_once_a_minute(job_store: Engine) -> None:
    create_account(job_store, "studio-a")
    record, key = create_key(job_store, "studio-a", ["generate"])
    start = utc_now()
    assert touch_key(job_store, record.id, start)
    assert not touch_key(job_store, record.id, start + timedelta(seconds=59))  # another service, same minute
    assert touch_key(job_store, record.id, start + timedelta(seconds=60))
    assert find_key(job_store, key).last_used_at == start + timedelta(seconds=60)


class Clock:
    def __init__(self) -> None:
        self.now = utc_now()

    def __call__(self):
        return self.now


def test_the_cache_trusts_a_key_for_its_cache_time_only(job_store: Engine) -> None:
    """A service checked the key (cached); another process revokes it: still trusted 4.9 s later, refused at 5 s.
    Used every second for two minutes, its last-used time is written twice (once a minute), not 120 times."""
    create_account(job_store, "studio-a")
    record, key = create_key(job_store, "studio-a", ["history"])
    clock = Clock()
    cache = KeyCache(job_store, seconds=5, now=clock)
    assert cache.verify(key).scopes == {"history"}
    revoke_key(job_store, record.prefix)
    clock.now += timedelta(seconds=4.9)
    assert cache.verify(key).owner == record.account_id
    clock.now += timedelta(seconds=0.1)
    with pytest.raises(ApiError) as refused:
        cache.verify(key)
    assert refused.value.status == 401 and refused.value.body.error == "revoked_api_key"
    assert refused.value.headers["WWW-Authenticate"].startswith("Bearer")
    other = create_key(job_store, "studio-a", ["generate"])[1]
    writes = []
    for _ in range(120):
        clock.now += timedelta(seconds=1)
        cache.verify(other)
        writes.append(find_key(job_store, other).last_used_at)
    assert len(set(writes)) == 2 and writes[0] is not None
