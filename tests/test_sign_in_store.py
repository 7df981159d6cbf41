"""Browser sign-in in the job store and at the jobs service's ``Sessions``, on SQLite and a real PostgreSQL (each
store test runs on both): passwords are stored only as salted scrypt hashes; a sign-in makes a signed session token
that any holder of the same cluster secret accepts and nothing altered passes; five failures of one member name lock
it (for every service: the count is in the store) until the oldest leaves the 15-minute window; a removed member or
a changed password ends a session at its next check; ``python -m jobs accounts set-password`` reads the password
from stdin, never the command line.

Run under the cluster lock (the PostgreSQL half starts a server):
``flock /tmp/ph-cluster.lock python -m pytest -q tests/test_sign_in_store.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, select

from bench.harness.processes import REPO
from jobs.api.sessions import Sessions, SignIn
from jobs.contract import SIGN_IN_WINDOW
from jobs.errors import MemberNotFound
from jobs.store import add_member, create_account, passwords, remove_member
from jobs.store.passwords import hash_password, set_password, verify_password
from jobs.store.records import utc_now
from jobs.store.schema import account_members
from jobs.store.sign_in_failures import locked_for, record_failure, sign_in_name
from webui.session_token import SessionSigner
from webui.worker.job_parsing import ApiError

SECRET = "cluster-secret-for-tests-0123456789"
PASSWORD = "correct horse battery"


@pytest.fixture(autouse=True)
def cheap_hashes(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A lower scrypt cost (its parameters travel in each hash), but for the test of the hashing itself."""
    if request.node.originalname != "test_a_password_is_stored_as_a_salted_scrypt_hash":
        monkeypatch.setattr(passwords, "SCRYPT_N", 2**10)


def test_a_password_is_stored_as_a_salted_scrypt_hash() -> None:
    assert hash_password(PASSWORD).startswith(f"scrypt${2**15}$8$1$")  # 32 MiB a check
    first, second = hash_password(PASSWORD), hash_password(PASSWORD)
    assert first.startswith("scrypt$") and PASSWORD not in first
    assert first != second  # a fresh salt each time
    assert verify_password(PASSWORD, first) and verify_password(PASSWORD, second)
    assert not verify_password(PASSWORD + "!", first)
    assert not verify_password(PASSWORD, "not a hash") and not verify_password(PASSWORD, "md5$1$2$3$4$5")


def test_a_session_token_is_accepted_with_the_same_secret_only_and_unaltered() -> None:
    signer, now = SessionSigner(SECRET), datetime.now(UTC)
    token = signer.token("acc_0123456789abcdef", "alice", now, timedelta(hours=12))
    session = signer.check(token)
    assert session is not None and (session.account_id, session.user) == ("acc_0123456789abcdef", "alice")
    assert SessionSigner(SECRET).check(token) == session  # another web front, same cluster secret
    assert SessionSigner(SECRET + "x").check(token) is None
    other = SessionSigner(SECRET).token("acc_fedcba9876543210", "alice", now, timedelta(hours=12))
    forged = ".".join([*other.split(".")[:2], *token.split(".")[2:]])  # another account with this one's signature
    assert signer.check(forged) is None
    assert signer.check(token.replace(token.split(".")[4], str(int(token.split(".")[4]) + 3600))) is None
    assert signer.check(token, now + timedelta(hours=12, seconds=1)) is None  # expired
    assert signer.check("s1.garbage") is None and signer.check("") is None


def sessions(engine: Engine) -> Sessions:
    create_account(engine, "studio-a")
    add_member(engine, "studio-a", "alice", "admin")
    set_password(engine, "studio-a", "alice", PASSWORD)
    return Sessions(engine, SessionSigner(SECRET))


def refused(call, *args) -> ApiError:
    with pytest.raises(ApiError) as refusal:
        call(*args)
    return refusal.value


def test_signing_in_checks_the_password_and_makes_a_session(job_store: Engine) -> None:
    service = sessions(job_store)
    with job_store.connect() as connection:
        [stored] = connection.execute(select(account_members.c.password_hash)).scalars()
    assert stored.startswith("scrypt$") and PASSWORD not in stored
    made = service.sign_in(SignIn(account="studio-a", user="alice", password=PASSWORD))
    assert (made.account, made.user, made.role) == ("studio-a", "alice", "admin") and made.token
    member, _ = Sessions(job_store, SessionSigner(SECRET)).verify(made.token)  # another service, same secret
    assert member.account_id == made.account_id
    for form in (SignIn(account="studio-a", user="alice", password=PASSWORD + "x"),
                 SignIn(account="studio-a", user="mallory", password=PASSWORD),
                 SignIn(account="studio-b", user="alice", password=PASSWORD)):
        refusal = refused(service.sign_in, form)
        assert (refusal.status, refusal.body.error) == (401, "sign_in_failed")
        assert refusal.body.detail == "The account, name or password is not right."  # never which part
    with pytest.raises(MemberNotFound):
        set_password(job_store, "studio-a", "mallory", PASSWORD)
    with pytest.raises(ValueError, match="10 to 1000 characters"):
        set_password(job_store, "studio-a", "alice", "short")


def test_five_failures_lock_the_name_for_every_service_until_the_window_passes(job_store: Engine) -> None:
    service = sessions(job_store)
    wrong = SignIn(account="studio-a", user="alice", password="wrong password")
    for _ in range(5):
        assert refused(service.sign_in, wrong).status == 401
    elsewhere = Sessions(job_store, SessionSigner(SECRET))  # another front's jobs service: the count is shared
    locked = refused(elsewhere.sign_in, SignIn(account="studio-a", user="alice", password=PASSWORD))
    assert (locked.status, locked.body.error) == (429, "sign_in_locked")
    assert locked.body.detail == "Too many failed sign-ins; try again in 15 minutes."
    assert 14 * 60 < int(locked.headers["Retry-After"]) <= 15 * 60
    name, now = sign_in_name("studio-a", "alice"), utc_now()
    assert locked_for(job_store, name, now + SIGN_IN_WINDOW) is None  # the oldest failures left the window
    assert locked_for(job_store, sign_in_name("studio-a", "bob"), now) is None  # other names are not locked


def test_a_success_clears_the_failures_and_old_ones_do_not_count(job_store: Engine) -> None:
    service = sessions(job_store)
    name, long_ago = sign_in_name("studio-a", "alice"), utc_now() - SIGN_IN_WINDOW - timedelta(seconds=1)
    for _ in range(10):
        record_failure(job_store, name, long_ago)
    for _ in range(4):
        assert refused(service.sign_in, SignIn(account="studio-a", user="alice", password="wrong password"))
    assert service.sign_in(SignIn(account="studio-a", user="alice", password=PASSWORD)).token
    assert refused(service.sign_in, SignIn(account="studio-a", user="alice", password="wrong password"))
    assert service.sign_in(SignIn(account="studio-a", user="alice", password=PASSWORD)).token  # 1 failure, not 5


def test_a_removed_member_or_a_changed_password_ends_the_session(job_store: Engine) -> None:
    service = sessions(job_store)
    add_member(job_store, "studio-a", "bob")
    set_password(job_store, "studio-a", "bob", PASSWORD)
    alice = service.sign_in(SignIn(account="studio-a", user="alice", password=PASSWORD)).token
    bob = service.sign_in(SignIn(account="studio-a", user="bob", password=PASSWORD)).token
    add_member(job_store, "studio-a", "alice", "member")  # a changed role keeps the password and the session
    assert service.verify(alice)[0].role == "member"
    set_password(job_store, "studio-a", "alice", PASSWORD + " new", now=utc_now() + timedelta(seconds=2))
    assert refused(service.verify, alice).body.error == "session_invalid"  # signed in before the new password
    assert service.verify(bob)[0].user == "bob"
    remove_member(job_store, "studio-a", "bob")
    assert refused(service.verify, bob).body.error == "session_invalid"


def test_set_password_reads_stdin_never_the_command_line(job_store: Engine, store_url: str) -> None:
    create_account(job_store, "studio-a")
    add_member(job_store, "studio-a", "alice")
    done = subprocess.run([sys.executable, "-m", "jobs", "accounts", "set-password", "studio-a", "alice"],
                          input=PASSWORD + "\n", cwd=REPO, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PORTRAIT_JOBS_STORE_URL": store_url})
    assert done.returncode == 0, done.stderr
    assert PASSWORD not in done.stdout + done.stderr
    service = Sessions(job_store, SessionSigner(SECRET))
    assert service.sign_in(SignIn(account="studio-a", user="alice", password=PASSWORD)).token
