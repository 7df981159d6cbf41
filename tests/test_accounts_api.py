"""API keys on the jobs service end to end: ``python -m jobs accounts`` makes accounts and keys (printed once,
stored as a hash), and two jobs services (``python -m jobs``) on one SQLite store, in front of one stand-in worker
(``--model standin:0.3``), take ``Authorization: Bearer <key>``: scopes are enforced, each account sees only its
own jobs (another's is a 404 for every route, whatever identity headers a client adds), anonymous clients work as
before, and a revoked key is refused by both services: at once by one that caches nothing, once its cache time
passed by the other (the exact bound is ``tests/test_accounts_store.py``'s, on an injected clock).

Run under the cluster lock: ``flock /tmp/ph-cluster.lock python -m pytest -q tests/test_accounts_api.py``.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select

from bench.harness.processes import REPO, Processes
from bench.harness.waiting import wait_until
from jobs.contract import ANONYMOUS
from jobs.store import make_engine, sweep_expired
from jobs.store.records import utc_now
from jobs.store.schema import accounts, api_keys, jobs
from tests.jobs_service import JOB, PART, WAIT, Part, accounts_cli, service, worker

SPOOFED = {"X-Portrait-Account": "", "X-Remote-User": "alice", "X-Forwarded-User": "alice", "X-Account": "",
           "X-Auth-Request-User": "alice"}
"""Identity headers a client might send hoping a proxy trusts them: the service reads none (the account's id is
filled in per test)."""


def accounts_script(store_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The console script itself, ``python -m jobs accounts ARGS`` on ``store_url`` (given in the environment, as an
    operator would); the other tests run its ``main`` in process (``accounts_cli``)."""
    return subprocess.run([sys.executable, "-m", "jobs", "accounts", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=WAIT, env={**os.environ, "PORTRAIT_JOBS_STORE_URL": store_url})


class Store:
    """The store's URL, the services on it, and the keys the CLI made."""

    def __init__(self, url: str, uncached: Part, cached: Part) -> None:
        self.url, self.uncached, self.cached = url, uncached, cached
        self.issued: list[str] = []

    def key(self, account: str, *scopes: str) -> str:
        made = accounts_cli(self.url, "create-key", account, *(f"--scope={scope}" for scope in scopes))
        assert made.returncode == 0, made.stderr
        self.issued.append(made.stdout.strip())
        return self.issued[-1]

    def column(self, query) -> list:
        engine = make_engine(self.url)
        try:
            with engine.connect() as connection:
                return list(connection.execute(query).scalars())
        finally:
            engine.dispose()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    url = f"sqlite:///{tmp_path_factory.mktemp('accounts') / 'jobs.sqlite3'}"
    for name in ("studio-a", "studio-b"):
        assert accounts_cli(url, "create", name).returncode == 0
    with Processes("accounts-api") as processes:
        part = worker(processes, "accounts-worker", 0.3).start()
        uncached = service(processes, "accounts-uncached", part.url, url, "--key-cache-seconds", "0").start()
        cached = service(processes, "accounts-cached", part.url, url, "--key-cache-seconds", "1").start()
        part.ready("/readyz")
        uncached.ready("/healthz")
        cached.ready("/healthz")
        yield Store(url, uncached, cached)


def call(part: Part, method: str, path: str, key: str | None = None, **headers: str) -> httpx.Response:
    auth = {"Authorization": f"Bearer {key}"} if key is not None else {}
    body = JOB if method == "POST" and path == "/v1/jobs" else None
    return httpx.request(method, part.url + path, json=body, headers={**PART, **auth, **headers}, timeout=WAIT)


def test_the_cli_prints_a_new_key_once_and_the_store_keeps_only_its_hash(store: Store) -> None:
    made = accounts_script(store.url, "create-key", "studio-a", "--scope=generate", "--scope=history")
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    assert made.stdout == key + "\n"  # the key alone on stdout, once
    assert key not in made.stderr and key[:16] in made.stderr  # the note names its prefix only
    assert key_hash_in_store(store, key)
    listed = accounts_script(store.url, "list-keys", "studio-a")
    assert listed.returncode == 0 and key[:16] in listed.stdout and key not in listed.stdout
    refused = accounts_script(store.url, "create-key", "studio-c", "--scope=generate")
    assert refused.returncode == 1 and "no account 'studio-c'" in refused.stderr


def key_hash_in_store(store: Store, key: str) -> bool:
    hashes = store.column(select(api_keys.c.hash))
    return hashlib.sha256(key.encode()).hexdigest() in hashes and key not in hashes


def test_scopes_are_enforced_and_errors_say_why(store: Store) -> None:
    history, generate = store.key("studio-a", "history"), store.key("studio-a", "generate")
    posted = call(store.uncached, "POST", "/v1/jobs", history)
    assert posted.status_code == 403, posted.text
    assert posted.json()["error"] == "missing_scope" and "generate" in posted.json()["detail"]
    assert 'error="insufficient_scope"' in posted.headers["www-authenticate"]
    assert call(store.uncached, "GET", "/v1/jobs", generate).status_code == 403
    assert call(store.uncached, "GET", "/v1/jobs", history).status_code == 200
    for bad in ({"Authorization": f"Bearer {history[:-2]}"}, {"Authorization": "Bearer not-a-key"},
                {"Authorization": "Bearer"}):
        refused = call(store.uncached, "GET", "/v1/jobs", **bad)
        assert refused.status_code == 401 and refused.json()["error"] == "invalid_api_key", refused.text
        assert refused.headers["www-authenticate"].startswith("Bearer")
        assert set(refused.json()) == {"error", "detail", "fields"}


def test_an_account_sees_only_its_own_jobs(store: Store) -> None:
    a, b = store.key("studio-a", "generate", "history"), store.key("studio-b", "admin")
    done = call(store.uncached, "POST", "/v1/jobs", a, Prefer="wait=30")
    assert done.status_code == 201 and done.json()["status"] == "succeeded", done.text
    job = done.json()["id"]
    account_a = store.column(select(accounts.c.id).where(accounts.c.name == "studio-a"))[0]
    assert store.column(select(jobs.c.owner).where(jobs.c.id == job)) == [account_a]
    spoofed = {name: value or account_a for name, value in SPOOFED.items()}
    anonymous = call(store.uncached, "POST", "/v1/jobs").json()["id"]  # no key: as before accounts
    routes = [("GET", f"/v1/jobs/{job}"), ("GET", f"/v1/jobs/{job}/results/0"), ("GET", f"/v1/jobs/{job}/events"),
              ("GET", f"/v1/jobs/{job}/deliveries"), ("POST", f"/v1/jobs/{job}/deliveries/msg_x/redeliver"),
              ("POST", f"/v1/jobs/{job}/share"), ("POST", f"/v1/jobs/{job}/cancel")]
    for method, path in routes:
        for key, headers in ((b, {}), (b, spoofed), (None, spoofed), (None, {"Authorization": "Basic c3R1ZGlvOng="})):
            answer = call(store.cached, method, path, key, **headers)
            assert answer.status_code == 404 and answer.json()["error"] == "job_not_found", (method, path)
    for key, mine, theirs in ((b, set(), {job, anonymous}), (None, {anonymous}, {job})):
        listed = {item["id"] for item in call(store.cached, "GET", "/v1/jobs", key, **spoofed).json()["jobs"]}
        assert mine <= listed and not theirs & listed
    assert {item["id"] for item in call(store.cached, "GET", "/v1/jobs", a).json()["jobs"]} == {job}
    assert call(store.cached, "GET", f"/v1/jobs/{job}/results/0", a).status_code == 200
    assert call(store.cached, "POST", f"/v1/jobs/{job}/share", a).status_code == 200
    assert call(store.cached, "GET", f"/v1/jobs/{anonymous}").status_code == 200
    used = store.column(select(api_keys.c.last_used_at).where(api_keys.c.prefix == a[:16]))
    assert used[0] is not None


def test_without_the_site_login_a_basic_auth_name_names_no_owner(store: Store) -> None:
    alice = {"Authorization": "Basic YWxpY2U6eA=="}  # alice:x, sent to a service started without --site-login
    made = call(store.uncached, "POST", "/v1/jobs", **alice)
    assert made.status_code == 202, made.text
    assert store.column(select(jobs.c.owner).where(jobs.c.id == made.json()["id"])) == [ANONYMOUS]


def test_a_revoked_key_is_refused_by_every_service(store: Store) -> None:
    key = store.key("studio-b", "history")
    for part in (store.uncached, store.cached):
        assert call(part, "GET", "/v1/jobs", key).status_code == 200  # checked, and cached by the second
    revoked = accounts_cli(store.url, "revoke-key", key[:16])
    assert revoked.returncode == 0 and key not in revoked.stdout + revoked.stderr
    at = time.monotonic()
    refused = call(store.uncached, "GET", "/v1/jobs", key)
    assert refused.status_code == 401 and refused.json()["error"] == "revoked_api_key"
    wait_until(lambda: call(store.cached, "GET", "/v1/jobs", key).status_code == 401,
               "the caching service refuses the revoked key", timeout=WAIT)
    print(f"revoked key refused by the caching service (cache 1 s) after {time.monotonic() - at:.2f} s")


def test_another_account_s_expired_job_is_a_404_not_a_410(store: Store) -> None:
    """Past its retention (the janitor's sweep, run here with a clock 31 days on), a job is a 410 to its owner
    and still a 404 to everyone else: an id says nothing about another account's jobs."""
    a, b = store.key("studio-a", "history", "generate"), store.key("studio-b", "history")
    job = call(store.cached, "POST", "/v1/jobs", a).json()["id"]
    engine = make_engine(store.url)
    try:
        assert sweep_expired(engine, now=utc_now() + timedelta(days=31)) >= 1
    finally:
        engine.dispose()
    assert call(store.cached, "GET", f"/v1/jobs/{job}", a).status_code == 410
    for key in (b, None):
        answer = call(store.cached, "GET", f"/v1/jobs/{job}", key)
        assert answer.status_code == 404 and answer.json()["error"] == "job_not_found"


def test_no_key_is_ever_logged(store: Store) -> None:
    logs = store.uncached.log() + store.cached.log()
    assert store.issued and not [key for key in store.issued if key in logs]
