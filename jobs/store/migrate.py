"""Bring a job store's schema to the newest revision at start-up: idempotent, and safe when several balancer
hosts start at once against one PostgreSQL (an advisory lock lets one migrate while the others wait, then find
nothing left to do). On SQLite the write transaction (``BEGIN IMMEDIATE``) does the same.

Every revision runs in the one transaction (both databases have transactional DDL): an upgrade that fails
half-way leaves the schema as it was.
"""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, text

from jobs.store.engine import make_engine, write

logger = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).with_name("migrations")
ADVISORY_LOCK = 0x6A6F6273  # "jobs": the key of PostgreSQL's advisory lock around an upgrade


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration for the job store (no alembic.ini): our scripts, on ``connection``."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def head() -> str:
    """The newest revision the code knows."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current(connection: Connection) -> str | None:
    """The revision the database is at (None: an empty database)."""
    return MigrationContext.configure(connection).get_current_revision()


def upgrade(target: str | Engine, revision: str = "head") -> str | None:
    """Migrate the store at ``target`` (a URL or an engine) to ``revision``; returns the revision it is at.

    A no-op when it is there already. PostgreSQL: the upgrade holds a transaction-scoped advisory lock, so a
    second host starting at the same time waits for the first, then finds the schema current.
    """
    engine = make_engine(target) if isinstance(target, str) else target
    try:
        with write(engine) as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK})
            before = current(connection)
            command.upgrade(alembic_config(connection), revision)
            after = current(connection)
    finally:
        if isinstance(target, str):
            engine.dispose()
    if before != after:
        logger.info("job store migrated from %s to %s", before or "an empty database", after)
    return after
