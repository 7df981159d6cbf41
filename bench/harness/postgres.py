"""A real PostgreSQL server for tests and benchmarks: Debian's PostgreSQL 15 binaries, a fresh cluster in a
temporary directory, run as an unprivileged user (PostgreSQL refuses to run as root), on a free port, with its
unix socket in that directory and ``fsync=off`` (a test's data need not survive a power cut). ``stop`` (also
on failure, through the context manager) stops it and removes the directory.
"""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import uuid
from pathlib import Path
from types import TracebackType

from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from bench.harness.processes import free_port

logger = logging.getLogger(__name__)

BIN = Path(os.environ.get("PORTRAIT_PG_BIN", "/usr/lib/postgresql/15/bin"))
"""Where Debian's ``postgresql-15`` package puts the server binaries."""
MISSING = (f"PostgreSQL's server binaries are not in {BIN} (initdb, pg_ctl): install Debian's PostgreSQL 15 "
           "with `scripts/setup.sh --dev` as root (or `apt-get install postgresql`), or name another directory "
           "in PORTRAIT_PG_BIN.")
USERS = ("postgres", "portrait-pg")
"""Unprivileged users to run the server as when we are root: Debian's own, else one we create."""
SUPERUSER = "portrait"
"""The cluster's superuser role (trust authentication, loopback and the private socket only)."""


def server_user() -> str | None:
    """The user to run PostgreSQL as: None when we are not root (we run it ourselves), else an existing
    unprivileged system user, created (``useradd --system``) when there is none."""
    if os.geteuid() != 0:
        return None
    for name in USERS:
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", USERS[-1]],
                   check=True)
    return USERS[-1]


class PostgresServer:
    """One PostgreSQL server; ``url`` names its ``postgres`` database, ``create_database`` a fresh one. ``host``:
    the address it listens on and its URLs name (another than loopback: a lab's, for its hosts to share it; any
    client on that address's subnet is trusted)."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        if not (BIN / "initdb").is_file() or not (BIN / "pg_ctl").is_file():
            raise RuntimeError(MISSING)
        self.user = server_user()
        # the server's user must reach the directory: when root, under /tmp (pytest's own is root-only)
        self.dir = Path(tempfile.mkdtemp(prefix="portrait-pg-", dir="/tmp" if self.user else None))
        self.data, self.socket_dir, self.log = self.dir / "data", self.dir / "socket", self.dir / "server.log"
        self.host = host
        self.port = free_port()
        self.started = False

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        argv = [str(BIN / args[0]), *args[1:]]
        if self.user:
            argv = ["runuser", "-u", self.user, "--", *argv]
        return subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=self.dir)

    def start(self) -> PostgresServer:
        """initdb, then start the server and wait until it accepts connections."""
        self.socket_dir.mkdir()
        if self.user:
            shutil.chown(self.dir, self.user)
            shutil.chown(self.socket_dir, self.user)
        done = self._run("initdb", "-D", str(self.data), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8",
                         "--no-locale", "--no-sync")
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed: {done.stderr[-2000:]}")
        if self.host != "127.0.0.1":
            with (self.data / "pg_hba.conf").open("a") as hba:
                hba.write("host all all samenet trust\n")
        options = (f"-p {self.port} -k {self.socket_dir} -c listen_addresses={self.host} -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=100")
        done = self._run("pg_ctl", "start", "-w", "-t", "60", "-D", str(self.data), "-l", str(self.log),
                         "-o", options)
        self.started = True
        if done.returncode != 0:
            raise RuntimeError(f"PostgreSQL did not start: {done.stderr[-1000:]}\n{self._log_tail()}")
        logger.info("PostgreSQL on port %d (%s)", self.port, self.dir)
        return self

    def _log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""

    @property
    def url(self) -> str:
        return self.url_of("postgres")

    def url_of(self, database: str) -> str:
        """A SQLAlchemy URL (psycopg 3) for ``database`` on this server, over TCP to ``host``."""
        return f"postgresql+psycopg://{SUPERUSER}@{self.host}:{self.port}/{database}"

    def create_database(self) -> str:
        """A new, empty database; returns its URL."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        self._admin(f'CREATE DATABASE "{name}"')
        return self.url_of(name)

    def drop_database(self, url: str) -> None:
        self._admin(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')

    def _admin(self, statement: str) -> None:
        engine = create_engine(self.url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
        try:
            with engine.connect() as connection:
                connection.execute(text(statement))
        finally:
            engine.dispose()

    def stop(self) -> None:
        """Stop the server (fast shutdown; killed if it will not stop) and remove its directory."""
        try:
            if self.started and self._run("pg_ctl", "stop", "-w", "-t", "30", "-m", "fast",
                                          "-D", str(self.data)).returncode != 0:
                self._kill()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def _kill(self) -> None:
        pid_file = self.data / "postmaster.pid"
        if pid_file.exists():
            pid = int(pid_file.read_text().split()[0])
            logger.warning("PostgreSQL (pid %d) did not stop: killing it", pid)
            os.kill(pid, signal.SIGKILL)

    def __enter__(self) -> PostgresServer:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
