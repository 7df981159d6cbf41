"""API keys: created for an account with scopes, shown once, stored as a hash, found by it, revoked.

A key is ``ph_live_`` and 43 URL-safe characters (32 random bytes). The store keeps its SHA-256, never the key:
with 256 random bits no one can guess a key from its hash, so a slow password hash (bcrypt, Argon2) would add
nothing but CPU on every request, and an HMAC would add a server secret every host must share and never lose.
A plain SHA-256 is also what the service looks the key up by (one indexed equality). The key's first 16
characters (``ph_live_ab12cd34``) are kept too, to show it in lists and name it for revocation.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from jobs.contract import API_KEY_PREFIX, LAST_USED_EVERY, SCOPES
from jobs.errors import ApiKeyNotFound
from jobs.store.accounts import find_account
from jobs.store.engine import read, write
from jobs.store.records import utc_now
from jobs.store.schema import accounts, api_keys

logger = logging.getLogger(__name__)

PREFIX_LENGTH = len(API_KEY_PREFIX) + 8
"""The visible part of a key: ``ph_live_`` and its first 8 random characters (48 bits: unique in practice)."""


@dataclass(frozen=True)
class ApiKey:
    """A key as stored (without the key itself), with its account's name."""

    id: str
    account_id: str
    account: str
    prefix: str
    label: str | None
    scopes: tuple[str, ...]
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


def new_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def key_hash(key: str) -> str:
    """What the store keeps of a key: its SHA-256, in hex."""
    return hashlib.sha256(key.encode()).hexdigest()


def checked_scopes(scopes: Sequence[str]) -> tuple[str, ...]:
    unknown = sorted(set(scopes) - set(SCOPES))
    if not scopes or unknown:
        raise ValueError(f"a key's scopes are one or more of {', '.join(SCOPES)}"
                         + (f"; {', '.join(unknown)} is not one" if unknown else ""))
    return tuple(scope for scope in SCOPES if scope in scopes)


def create_key(engine: Engine, account: str, scopes: Sequence[str], label: str | None = None,
               now: datetime | None = None) -> tuple[ApiKey, str]:
    """A new key for the account called ``account``: its record and the key itself (shown once, never stored)."""
    scopes = checked_scopes(scopes)
    for draw in range(3):
        key = new_key()
        values = {"id": "key_" + secrets.token_urlsafe(12), "prefix": key[:PREFIX_LENGTH], "hash": key_hash(key),
                  "label": label, "scopes": list(scopes), "created_at": now or utc_now()}
        try:
            with write(engine) as connection:
                owner = find_account(connection, account)
                connection.execute(insert(api_keys).values(account_id=owner.id, **values))
        except IntegrityError:  # the same random prefix twice (48 bits): draw another key
            if draw == 2:
                raise
            continue
        logger.info("account %s: API key %s created (%s)", account, values["prefix"], ", ".join(scopes))
        return _record({**values, "account_id": owner.id, "account": account, "last_used_at": None,
                        "revoked_at": None}), key
    raise AssertionError("unreachable")


def _record(fields: dict) -> ApiKey:
    return ApiKey(**{name: fields[name] for name in ApiKey.__dataclass_fields__} | {"scopes": tuple(fields["scopes"])})


_WITH_ACCOUNT = select(api_keys, accounts.c.name.label("account")).join(accounts)


def find_key(engine: Engine, key: str) -> ApiKey | None:
    """The record of ``key`` (revoked or not), or None when no key is this one."""
    with read(engine) as connection:
        row = connection.execute(_WITH_ACCOUNT.where(api_keys.c.hash == key_hash(key))).one_or_none()
    return None if row is None else _record(dict(row._mapping))


def key_by_prefix(engine: Engine, prefix: str) -> ApiKey:
    """The key whose visible prefix (or id) is ``prefix`` (a trailing ``…`` is allowed); ``ApiKeyNotFound``."""
    prefix = prefix.rstrip("…")
    with read(engine) as connection:
        row = connection.execute(_WITH_ACCOUNT.where(or_(api_keys.c.prefix == prefix,
                                                         api_keys.c.id == prefix))).one_or_none()
    if row is None:
        raise ApiKeyNotFound(prefix)
    return _record(dict(row._mapping))


def list_keys(engine: Engine, account: str) -> list[ApiKey]:
    """The account's keys, oldest first, revoked ones included."""
    with read(engine) as connection:
        account_id = find_account(connection, account).id
        rows = connection.execute(_WITH_ACCOUNT.where(api_keys.c.account_id == account_id)
                                  .order_by(api_keys.c.created_at, api_keys.c.id))
        return [_record(dict(row._mapping)) for row in rows]


def revoke_key(engine: Engine, prefix: str, now: datetime | None = None, account: str | None = None) -> ApiKey:
    """Revoke the key named by ``prefix`` (or id); revoking it again keeps the first time. Returns it as it is now.
    With ``account``, only a key of the account of that name (another's is ``ApiKeyNotFound``)."""
    found = key_by_prefix(engine, prefix)
    if account is not None and found.account != account:
        raise ApiKeyNotFound(prefix)
    with write(engine) as connection:
        connection.execute(update(api_keys).where(api_keys.c.id == found.id, api_keys.c.revoked_at.is_(None))
                           .values(revoked_at=now or utc_now()))
    logger.info("account %s: API key %s revoked", found.account, found.prefix)
    return key_by_prefix(engine, found.id)


def touch_key(engine: Engine, key_id: str, now: datetime | None = None) -> bool:
    """Record that the key was used at ``now``, unless that was written less than ``LAST_USED_EVERY`` ago (by
    any service); True when written."""
    now = now or utc_now()
    with write(engine) as connection:
        return bool(connection.execute(update(api_keys).where(
            api_keys.c.id == key_id,
            or_(api_keys.c.last_used_at.is_(None), api_keys.c.last_used_at <= now - LAST_USED_EVERY),
        ).values(last_used_at=now)).rowcount)
