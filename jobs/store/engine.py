"""One SQLAlchemy engine for the job store, from a URL: SQLite by default (a file in the run directory),
PostgreSQL (``postgresql+psycopg://``) when several balancer hosts share the work. Same code path for both.

SQLite runs every write transaction as ``BEGIN IMMEDIATE`` (``write(engine)``): it takes the database's one
write lock at the start, so a read-then-write never meets another process's commit halfway (SQLite would then
fail with "database is locked" at once instead of waiting). Reads (``read(engine)``) use a plain ``BEGIN`` and
run beside a writer (WAL).
"""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url

logger = logging.getLogger(__name__)

DEFAULT_FILE = "jobs.sqlite3"
"""The SQLite store's file in the run directory."""
BUSY_TIMEOUT_MS = 10_000
"""How long an SQLite writer waits for another's write lock before it gives up."""
_WRITE = "jobs_write"
"""Execution option that makes an SQLite transaction begin IMMEDIATE."""

POOL = {
    "pool_size": 5,          # connections kept open per process: a dispatcher, the API and the janitor at once
    "max_overflow": 10,      # extra connections in a burst, closed again when returned
    "pool_timeout": 10,      # seconds a caller waits for a free connection before an error (never forever)
    "pool_recycle": 1800,    # reopen connections older than 30 min (idle timeouts of proxies, server restarts)
    "pool_pre_ping": True,   # test a connection before use: a PostgreSQL restart or failover costs no request
}
"""PostgreSQL's connection pool, one line of why each."""


def default_url(run_dir: Path) -> str:
    """The store's URL when none is configured: an SQLite file in the run directory."""
    return f"sqlite:///{run_dir / DEFAULT_FILE}"


def make_engine(url: str, **options: Any) -> Engine:
    """An engine for ``url`` (``sqlite:///PATH`` or ``postgresql+psycopg://...``), set up for the job store."""
    dialect = make_url(url).get_backend_name()
    if dialect == "sqlite":
        engine = create_engine(url, **options)
        _set_up_sqlite(engine)
        return engine
    if dialect == "postgresql":
        return create_engine(url, **{**POOL, **options})
    raise ValueError(f"the job store runs on SQLite or PostgreSQL, not {dialect!r} ({url.split('://')[0]}://)")


def _set_up_sqlite(engine: Engine) -> None:
    """WAL (readers beside a writer), a busy timeout, foreign keys (cascades), and our own BEGIN statements."""

    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # the driver starts no transactions itself; "begin" below does
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA auto_vacuum = INCREMENTAL")  # takes effect in a new file: the janitor frees pages
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = FULL")  # a commit is on disk before a client hears "accepted"
        cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def on_begin(connection: Connection) -> None:
        immediate = connection.get_execution_options().get(_WRITE, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def write(engine: Engine) -> AbstractContextManager[Connection]:
    """A transaction that writes: committed at the end of the ``with`` block, rolled back on an error."""
    return engine.execution_options(**{_WRITE: True}).begin()


def read(engine: Engine) -> AbstractContextManager[Connection]:
    """A transaction that only reads."""
    return engine.begin()
