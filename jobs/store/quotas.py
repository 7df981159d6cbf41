"""Quotas: what an account used against its limits, read from the shared store (so every jobs service agrees).

An account's limits hold for every job it answers for: those of its API keys (owned by the account's id) and
those of its members' site logins (owned by the login name, e.g. the page's jobs on a site with ``--site-login``).
A login that is a member of several accounts is held to each of their limits.

An account's ``max_running`` counts its jobs queued or running (``starting``, ``processing``); its
``daily_images`` counts the images (``num_images``) of its jobs created since 00:00 UTC, except jobs that failed
or were canceled before a worker started them (they used no GPU). Both are read in one transaction just before a
submission, not reserved with it: submissions of one account arriving at the very same moment on several hosts may
each pass, so a limit can be exceeded by those few.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time

from sqlalchemy import Connection, Engine, Row, and_, func, not_, or_, select

from jobs.contract import ACTIVE, CANCELED, FAILED
from jobs.store.engine import read
from jobs.store.schema import account_members, accounts, jobs
from jobs.store.submissions import by_key


@dataclass(frozen=True)
class Usage:
    """An account's limits (None: none) and what it used against them."""

    max_running: int | None
    daily_images: int | None
    active: int
    """Its jobs queued or running now."""
    images_today: int
    """Images its jobs asked for since 00:00 UTC (failed or canceled before starting: not counted)."""
    account: str = ""
    """The account's name."""


def start_of_day(now: datetime) -> datetime:
    """00:00 UTC of ``now``'s day (``now`` is UTC)."""
    return datetime.combine(now.date(), time(), tzinfo=now.tzinfo)


def limited_accounts(connection: Connection, owner: str) -> list[Row]:
    """The accounts with a limit that answer for ``owner``'s jobs: the account ``owner`` is, or those whose member
    it is (a site login)."""
    limited = or_(accounts.c.max_running.is_not(None), accounts.c.daily_images.is_not(None))
    member_of = select(account_members.c.account_id).where(account_members.c.user == owner)
    query = select(accounts.c.id, accounts.c.name, accounts.c.max_running, accounts.c.daily_images)
    return list(connection.execute(query.where(limited, or_(accounts.c.id == owner, accounts.c.id.in_(member_of)))
                                   .order_by(accounts.c.name)))


def account_usage(connection: Connection, account: Row, now: datetime) -> Usage:
    """What ``account`` (a ``limited_accounts`` row) used: the jobs of its id and of its members' logins."""
    members = select(account_members.c.user).where(account_members.c.account_id == account.id)
    owned = or_(jobs.c.owner == account.id, jobs.c.owner.in_(members))
    never_ran = and_(jobs.c.status.in_((FAILED, CANCELED)), jobs.c.started_at.is_(None))
    images = func.coalesce(jobs.c.input["num_images"].as_integer(), 1)
    today = func.coalesce(func.sum(images).filter(jobs.c.created_at >= start_of_day(now), not_(never_ran)), 0)
    active = func.count().filter(jobs.c.status.in_(ACTIVE))
    used = connection.execute(select(active, today).where(
        owned, or_(jobs.c.status.in_(ACTIVE), jobs.c.created_at >= start_of_day(now)))).one()
    return Usage(account.max_running, account.daily_images, used[0], used[1], account.name)


def quota_usage(engine: Engine, owner: str, now: datetime, idempotency_key: str | None = None) -> list[Usage]:
    """The usage of each account with a limit that answers for ``owner`` (none: ``owner`` is not limited); none
    either when ``idempotency_key`` names one of ``owner``'s jobs already (a resend is answered by that job, never
    refused)."""
    with read(engine) as connection:
        limited = limited_accounts(connection, owner)
        if not limited or (idempotency_key is not None and by_key(connection, owner, idempotency_key)):
            return []
        return [account_usage(connection, account, now) for account in limited]
