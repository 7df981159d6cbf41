"""Accounts (a studio, an app: the owner of its jobs) and their members, each an admin or a member.

An account's id (``acc_`` + 16 random characters) is the ``owner`` of the jobs its API keys submit; operators name
it by its unique ``name`` and set its ``weight``, its fair share of GPU time (``jobs.store.fair_share``), and its
limits (``max_running`` jobs at once, ``daily_images`` per UTC day; None: no limit, ``jobs.store.quotas``) and its
retention (``results_days``, ``inputs_days``; None: the service's, ``jobs.store.account_retention``).
Members are login names with a role; browser sign-in (``passwords``) makes a member's jobs their account's.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, Engine, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from jobs.contract import ROLES
from jobs.errors import AccountExists, AccountNotFound, MemberNotFound
from jobs.store.engine import read, write
from jobs.store.records import utc_now
from jobs.store.schema import account_members, accounts

logger = logging.getLogger(__name__)

ACCOUNT_ID_PREFIX = "acc_"


@dataclass(frozen=True)
class Account:
    id: str
    name: str
    created_at: datetime
    weight: float = 1.0
    max_running: int | None = None
    daily_images: int | None = None
    results_days: int | None = None
    inputs_days: int | None = None


@dataclass(frozen=True)
class Member:
    user: str
    role: str
    added_at: datetime


def create_account(engine: Engine, name: str, now: datetime | None = None) -> Account:
    """A new account called ``name`` (unique: ``AccountExists`` otherwise)."""
    if not name.strip() or len(name) > 100:
        raise ValueError("an account's name is 1 to 100 characters")
    account = Account(ACCOUNT_ID_PREFIX + secrets.token_urlsafe(12), name, now or utc_now())
    try:
        with write(engine) as connection:
            connection.execute(insert(accounts).values(**account.__dict__))
    except IntegrityError:
        raise AccountExists(name) from None
    logger.info("account %s created (%s)", account.name, account.id)
    return account


def find_account(connection: Connection, name: str) -> Account:
    """The account called ``name``; ``AccountNotFound`` otherwise."""
    row = connection.execute(select(accounts).where(accounts.c.name == name)).one_or_none()
    if row is None:
        raise AccountNotFound(name)
    return Account(**row._mapping)


def get_account(engine: Engine, name: str) -> Account:
    with read(engine) as connection:
        return find_account(connection, name)


def list_accounts(engine: Engine) -> list[Account]:
    with read(engine) as connection:
        return [Account(**row._mapping) for row in connection.execute(select(accounts).order_by(accounts.c.name))]


def set_weight(engine: Engine, name: str, weight: float) -> Account:
    """Give the account called ``name`` the fair-share ``weight`` (a positive number; 1 is everyone's default)."""
    if not 0 < weight <= 1000:
        raise ValueError(f"an account's weight is a number above 0 and at most 1000 (1 is the default), not {weight:g}")
    with write(engine) as connection:
        row = connection.execute(update(accounts).where(accounts.c.name == name).values(weight=weight)
                                 .returning(*accounts.c)).one_or_none()
    if row is None:
        raise AccountNotFound(name)
    logger.info("account %s: weight %g", name, weight)
    return Account(**row._mapping)


def set_limits(engine: Engine, name: str, max_running: int | None, daily_images: int | None) -> Account:
    """Limit the account called ``name`` to ``max_running`` jobs queued or running at once and ``daily_images``
    images per UTC day (None: no limit)."""
    for what, value in (("max-running", max_running), ("daily-images", daily_images)):
        if value is not None and not 1 <= value <= 1_000_000:
            raise ValueError(f"an account's {what} limit is a whole number from 1 to 1000000, or none, not {value}")
    with write(engine) as connection:
        row = connection.execute(update(accounts).where(accounts.c.name == name).values(
            max_running=max_running, daily_images=daily_images).returning(*accounts.c)).one_or_none()
    if row is None:
        raise AccountNotFound(name)
    logger.info("account %s: max running %s, daily images %s", name, max_running, daily_images)
    return Account(**row._mapping)


def add_member(engine: Engine, account: str, user: str, role: str = "member", now: datetime | None = None) -> Member:
    """Make ``user`` a member of the account called ``account`` with ``role`` (a member already: role changed)."""
    if role not in ROLES:
        raise ValueError(f"a member's role is one of {', '.join(ROLES)}, not {role!r}")
    if not user.strip() or len(user) > 200:
        raise ValueError("a member's login name is 1 to 200 characters")
    member = Member(user, role, now or utc_now())
    with write(engine) as connection:
        account_id = find_account(connection, account).id
        changed = connection.execute(update(account_members).where(  # a role changed keeps the password
            account_members.c.account_id == account_id, account_members.c.user == user).values(role=role)).rowcount
        if not changed:
            connection.execute(insert(account_members).values(account_id=account_id, **member.__dict__))
    logger.info("account %s: %s is a%s %s", account, user, "n" if role == "admin" else "", role)
    return member


def remove_member(engine: Engine, account: str, user: str) -> None:
    """``user`` is no longer a member of ``account`` (``MemberNotFound`` when they were not one)."""
    with write(engine) as connection:
        account_id = find_account(connection, account).id
        removed = connection.execute(delete(account_members).where(
            account_members.c.account_id == account_id, account_members.c.user == user)).rowcount
    if not removed:
        raise MemberNotFound(account, user)
    logger.info("account %s: %s removed", account, user)


def members(engine: Engine, account: str) -> list[Member]:
    with read(engine) as connection:
        account_id = find_account(connection, account).id
        rows = connection.execute(select(account_members.c.user, account_members.c.role, account_members.c.added_at)
                                  .where(account_members.c.account_id == account_id)
                                  .order_by(account_members.c.user))
        return [Member(**row._mapping) for row in rows]
