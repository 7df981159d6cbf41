"""Failed browser sign-ins, counted per member name in the store, so that every jobs service locks the same name.

A name (``account/user``, whether or not such a member exists: the answer never tells) with ``SIGN_IN_FAILURES``
failures within ``SIGN_IN_WINDOW`` is locked until its oldest failure leaves the window; a successful sign-in clears
its failures. Rows older than the window are swept whenever a failure is recorded.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Engine, delete, func, insert, select

from jobs.contract import SIGN_IN_FAILURES, SIGN_IN_WINDOW
from jobs.store.engine import read, write
from jobs.store.records import utc_now
from jobs.store.schema import sign_in_failures as failures


def sign_in_name(account: str, user: str) -> str:
    """The name failures are counted by."""
    return f"{account}/{user}"[:320]


def locked_for(engine: Engine, name: str, now: datetime | None = None) -> timedelta | None:
    """How long ``name`` stays locked (None: it may try)."""
    now = now or utc_now()
    with read(engine) as connection:
        count, oldest = connection.execute(select(func.count(), func.min(failures.c.at)).where(
            failures.c.name == name, failures.c.at > now - SIGN_IN_WINDOW)).one()
    if count < SIGN_IN_FAILURES:
        return None
    return oldest + SIGN_IN_WINDOW - now


def record_failure(engine: Engine, name: str, now: datetime | None = None) -> None:
    """One more failed sign-in of ``name``."""
    now = now or utc_now()
    with write(engine) as connection:
        connection.execute(delete(failures).where(failures.c.at <= now - SIGN_IN_WINDOW))
        connection.execute(insert(failures).values(name=name, at=now))


def clear_failures(engine: Engine, name: str) -> None:
    """``name`` signed in: its earlier failures no longer count."""
    with write(engine) as connection:
        connection.execute(delete(failures).where(failures.c.name == name))
