"""One SQLAlchemy engine for the job store, from a URL: SQLite by default (a file in the run directory),
PostgreSQL (``postgresql+psycopg://``) when several balancer hosts share the work. Same code path for both.

SQLite runs every write transaction as ``BEGIN IMMEDIATE`` (``write(engine)``): it takes the database's one
write lock at the start, so a read-then-write never meets another process's commit halfway (SQLite would then
fail with "database is locked" at once instead of waiting). Reads (``read(engine)``) use a plain ``BEGIN`` and
run beside a writer (WAL).

PostgreSQL sessions are told at connect to end when their client is gone (``SESSION``): a balancer host whose
cable is cut mid-transaction holds row locks that claims skip (``FOR UPDATE SKIP LOCKED``), so without a bound
its jobs would wait for the kernel's keep-alive, two hours. ``CLIENT`` bounds the same wait on this side.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
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

IDLE_IN_TRANSACTION_S = 10.0
"""Seconds PostgreSQL keeps a session that sits idle inside a transaction: a host cut off mid-transaction (no FIN,
no RST) would otherwise hold its row locks for the kernel's two hours, and claims skip locked rows."""
SESSION = {
    "lock_timeout": "20s",              # a statement waiting on a row lock gives up, never waits forever
    "tcp_keepalives_idle": "5",         # the server probes a silent client after 5 s ...
    "tcp_keepalives_interval": "2",     # ... every 2 s ...
    "tcp_keepalives_count": "3",        # ... and drops it after 3 unanswered probes
    "tcp_user_timeout": "10000",        # and drops a client that acknowledges no data for 10 s (ms)
}
"""Settings of each PostgreSQL session, sent at connect (``options``), one line of why each."""
CLIENT = {
    "connect_timeout": 5,               # a store that does not answer fails the call in seconds
    "keepalives": 1,                    # this side probes a silent server too ...
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 10000,          # ... and gives up on unacknowledged data after 10 s (ms)
}
"""libpq's own connection parameters, so a cut-off store ends a call instead of hanging it."""


def default_url(run_dir: Path) -> str:
    """The store's URL when none is configured: an SQLite file in the run directory."""
    return f"sqlite:///{run_dir / DEFAULT_FILE}"


def make_engine(url: str, idle_in_transaction_s: float = IDLE_IN_TRANSACTION_S, **options: Any) -> Engine:
    """An engine for ``url`` (``sqlite:///PATH`` or ``postgresql+psycopg://...``), set up for the job store.
    ``idle_in_transaction_s``: PostgreSQL ends a session idle that long inside a transaction (its locks freed)."""
    parsed = make_url(url)
    dialect = parsed.get_backend_name()
    if dialect == "sqlite":
        engine = create_engine(url, **options)
        _set_up_sqlite(engine)
        return engine
    if dialect == "postgresql":
        return create_engine(url, **{**POOL, "connect_args": _postgres_connect_args(parsed.query,
                                                                                  idle_in_transaction_s),
                                     **options})
    raise ValueError(f"the job store runs on SQLite or PostgreSQL, not {dialect!r} ({url.split('://')[0]}://)")


def _postgres_connect_args(query: Mapping[str, Any], idle_in_transaction_s: float) -> dict[str, Any]:
    """``CLIENT`` and ``SESSION`` (after any ``options`` the URL gives), each overridden by the URL's own."""
    session = {**SESSION, "idle_in_transaction_session_timeout": f"{round(idle_in_transaction_s * 1000)}"}
    given = query.get("options", "")
    options = " ".join([*(f"-c {name}={value}" for name, value in session.items() if name not in given), given])
    return {**{name: value for name, value in CLIENT.items() if name not in query}, "options": options.strip()}


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
