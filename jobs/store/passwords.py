"""Members' browser sign-in passwords: hashed with scrypt (a slow, memory-hard KDF), set and checked here.

A hash reads ``scrypt$N$r$p$salt$hash`` (salt and hash in URL-safe base64): its cost travels with it, so a later,
costlier setting leaves older hashes checkable. The password itself is never stored nor logged. Setting a password
refuses every browser session signed in before it (``password_set_at``): a changed password signs everyone out.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, select, update

from jobs.errors import MemberNotFound
from jobs.store.accounts import find_account
from jobs.store.engine import read, write
from jobs.store.records import utc_now
from jobs.store.schema import account_members, accounts

logger = logging.getLogger(__name__)

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1
"""32 MiB and 0.1 to 0.3 s of one core a check: costly to guess at scale, cheap for one sign-in."""
MIN_PASSWORD, MAX_PASSWORD = 10, 1000
"""Password length in characters: long enough to resist guessing with the lockout, short enough to hash fast."""


def hash_password(password: str) -> str:
    """The scrypt hash of ``password`` with a fresh 16-byte salt, in the stored form."""
    salt, n, r, p = secrets.token_bytes(16), SCRYPT_N, SCRYPT_R, SCRYPT_P
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=256 * n * r + 2**20)
    encode = base64.urlsafe_b64encode
    return f"scrypt${n}${r}${p}${encode(salt).decode()}${encode(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` is the one ``stored`` (a ``hash_password`` result) was made from; False for anything
    that is not such a hash."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.urlsafe_b64decode(digest)
        given = hashlib.scrypt(password.encode(), salt=base64.urlsafe_b64decode(salt), n=int(n), r=int(r),
                               p=int(p), maxmem=256 * int(n) * int(r) + 2**20, dklen=len(expected))
    except ValueError:
        return False
    return hmac.compare_digest(given, expected)


@functools.cache
def dummy_hash() -> str:
    """Checked against for a name with no password, so that its answer takes as long as a real check (made at the
    first use: a hash costs 0.1 s of CPU, which every process importing this module paid at start)."""
    return hash_password(secrets.token_urlsafe(16))


def check_password_rules(password: str) -> None:
    """ValueError in words for a password this service does not take."""
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise ValueError(f"a password is {MIN_PASSWORD} to {MAX_PASSWORD} characters long")


def set_password(engine: Engine, account: str, user: str, password: str, now: datetime | None = None) -> None:
    """Give ``user`` of ``account`` the sign-in ``password`` (hashed); their earlier sessions end."""
    check_password_rules(password)
    hashed = hash_password(password)
    with write(engine) as connection:
        account_id = find_account(connection, account).id
        changed = connection.execute(update(account_members).where(
            account_members.c.account_id == account_id, account_members.c.user == user).values(
            password_hash=hashed, password_set_at=now or utc_now())).rowcount
    if not changed:
        raise MemberNotFound(account, user)
    logger.info("account %s: %s has a new sign-in password", account, user)


@dataclass(frozen=True)
class SignInMember:
    """A member as sign-in sees them: their account, role and when their password was last set."""

    account_id: str
    account: str
    user: str
    role: str
    password_hash: str | None
    password_set_at: datetime | None


def sign_in_member(engine: Engine, account: str | None, user: str,
                   account_id: str | None = None) -> SignInMember | None:
    """The member ``user`` of the account named ``account`` (or with id ``account_id``), or None."""
    query = (select(accounts.c.id.label("account_id"), accounts.c.name.label("account"), account_members.c.user,
                    account_members.c.role, account_members.c.password_hash, account_members.c.password_set_at)
             .join(accounts, accounts.c.id == account_members.c.account_id).where(account_members.c.user == user))
    query = query.where(accounts.c.id == account_id) if account_id else query.where(accounts.c.name == account)
    with read(engine) as connection:
        row = connection.execute(query).one_or_none()
    return SignInMember(**row._mapping) if row is not None else None
