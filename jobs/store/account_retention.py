"""Per-account retention: an account keeps its jobs and results ``results_days`` days and their input photos
``inputs_days`` days (e.g. results 90, customer photos 7), instead of the service's ``--retention-days``.

``set_retention`` records both and re-dates the account's jobs already kept (``expires_at`` = created + days), so
the janitor's sweep (``retention.sweep_expired``) deletes them on time; a new job of the account is given its
``expires_at`` when recorded (``retention_for``). ``strip_expired_inputs``, run by the janitor, removes the photo
(``init_image``) from the input of the account's finished jobs older than ``inputs_days``: the job, its other
settings and its results stay. Retention follows a job's owner: the jobs of the account's API keys.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine, bindparam, select, update

from jobs.contract import JANITOR_BATCH, TERMINAL
from jobs.errors import AccountNotFound
from jobs.store.accounts import ACCOUNT_ID_PREFIX, Account
from jobs.store.engine import read, write
from jobs.store.records import utc_now
from jobs.store.schema import accounts, jobs
from webui.contract import PHOTO_FIELD

logger = logging.getLogger(__name__)

MAX_DAYS = 36_500
"""The input field that holds a retouch job's photo (base64)."""


def set_retention(engine: Engine, name: str, results_days: int | None, inputs_days: int | None) -> Account:
    """Keep the account called ``name``'s jobs ``results_days`` days and their photos ``inputs_days`` days (None:
    the service's retention; jobs already kept then keep their date)."""
    for what, value in (("results-days", results_days), ("inputs-days", inputs_days)):
        if value is not None and not 1 <= value <= MAX_DAYS:
            raise ValueError(f"an account's {what} is a whole number of days from 1 to {MAX_DAYS}, or none, "
                             f"not {value}")
    with write(engine) as connection:
        row = connection.execute(update(accounts).where(accounts.c.name == name).values(
            results_days=results_days, inputs_days=inputs_days).returning(*accounts.c)).one_or_none()
        if row is None:
            raise AccountNotFound(name)
        if results_days is not None:
            kept = connection.execute(select(jobs.c.id, jobs.c.created_at).where(jobs.c.owner == row.id)).all()
            if kept:
                connection.execute(update(jobs).where(jobs.c.id == bindparam("job")).values(expires_at=bindparam("at")),
                                   [{"job": job.id, "at": job.created_at + timedelta(days=results_days)}
                                    for job in kept])
    logger.info("account %s: results kept %s days, input photos %s days", name, results_days or "the service's",
                inputs_days or "as long as their job")
    return Account(**row._mapping)


def retention_for(connection: Connection, owner: str, default: timedelta) -> timedelta:
    """How long a new job of ``owner`` is kept: its account's ``results_days``, else ``default`` (no query for an
    owner that is no account: the anonymous one, a site login)."""
    if not owner.startswith(ACCOUNT_ID_PREFIX):
        return default
    days = connection.execute(select(accounts.c.results_days).where(accounts.c.id == owner)).scalar_one_or_none()
    return default if days is None else timedelta(days=days)


def strip_expired_inputs(engine: Engine, now: datetime | None = None, batch: int = JANITOR_BATCH) -> int:
    """Remove the photo from the input of every finished job older than its account's ``inputs_days``; how many."""
    now = now or utc_now()
    with read(engine) as connection:
        limited = connection.execute(select(accounts.c.id, accounts.c.inputs_days)
                                     .where(accounts.c.inputs_days.is_not(None))).all()
    stripped = 0
    for account in limited:
        while (count := _strip_batch(engine, account.id, now - timedelta(days=account.inputs_days), batch)) > 0:
            stripped += count
            if count < batch:
                break
    if stripped:
        logger.info("janitor: removed the input photo of %d jobs past their account's retention", stripped)
    return stripped


def _strip_batch(engine: Engine, owner: str, before: datetime, batch: int) -> int:
    with_photo = jobs.c.input[PHOTO_FIELD].as_string().is_not(None)
    due = (select(jobs.c.id, jobs.c.input).where(jobs.c.owner == owner, jobs.c.status.in_(TERMINAL),
                                                 jobs.c.created_at <= before, with_photo)
           .order_by(jobs.c.seq).limit(batch).with_for_update(skip_locked=True))
    with write(engine) as connection:
        rows = connection.execute(due).all()
        for row in rows:
            connection.execute(update(jobs).where(jobs.c.id == row.id).values(
                input={name: value for name, value in row.input.items() if name != PHOTO_FIELD}))
    return len(rows)
