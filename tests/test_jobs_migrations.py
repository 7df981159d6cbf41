"""The job store's schema migrations on SQLite and a real PostgreSQL server: an upgrade twice changes nothing,
the migrated schema is exactly the code's tables (Alembic's comparison finds no difference), an upgrade from an
older revision keeps every job, and two hosts upgrading one empty database at the same moment both succeed
(PostgreSQL: an advisory lock).

Run under the cluster lock (the PostgreSQL half starts a server):
``flock /tmp/ph-cluster.lock python -m pytest -q tests/test_jobs_migrations.py``.
"""

from __future__ import annotations

import multiprocessing
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, insert, inspect, text

from bench.harness.postgres import PostgresServer
from jobs.store import (
    Image,
    claim_next,
    events_after,
    finish,
    get,
    job_deliveries,
    make_engine,
    stored_results,
    submit,
    upgrade,
)
from jobs.store.migrate import head
from jobs.store.schema import job_events, jobs, metadata, results


def test_an_upgrade_twice_is_a_no_op_and_keeps_the_jobs(store_url: str, job_store: Engine) -> None:
    job = submit(job_store, {"prompt": "kept"})[0]
    tables = sorted(inspect(job_store).get_table_names())
    assert upgrade(store_url) == upgrade(job_store) == head() == "0010"
    assert sorted(inspect(job_store).get_table_names()) == tables
    with job_store.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM alembic_version")).scalar_one() == 1
        assert connection.execute(text("SELECT id FROM jobs")).scalars().all() == [job.id]


def test_the_migrated_schema_is_the_code_s_tables(job_store: Engine) -> None:
    with job_store.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, metadata)
    assert differences == []


def upgrade_in_a_process(url: str, start: threading.Barrier) -> str | None:
    start.wait()
    return upgrade(url)


def test_hosts_starting_at_once_migrate_one_database_once(postgres_server: PostgresServer, hosts: int = 3) -> None:
    """Three balancer hosts start together against an empty PostgreSQL database: all three come up at the head
    revision (without the advisory lock, two would create the same tables at once and one would fail)."""
    url = postgres_server.create_database()
    try:
        context = multiprocessing.get_context("spawn")
        with context.Manager() as manager, context.Pool(hosts) as pool:
            start = manager.Barrier(hosts)
            assert pool.starmap(upgrade_in_a_process, [(url, start)] * hosts) == [head()] * hosts
        engine = make_engine(url)
        with engine.connect() as connection:
            assert connection.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [head()]
        engine.dispose()
    finally:
        postgres_server.drop_database(url)


def an_old_finished_job(engine: Engine, job_id: str = "j_made_by_the_first_release_00") -> str:
    """A succeeded job, its result and its events written as the first release (revision 0001) wrote them: only
    the columns that revision has (the code's ``submit``/``finish`` write today's columns)."""
    now = datetime.now(UTC)
    with engine.begin() as connection:
        connection.execute(insert(jobs).values(
            id=job_id, owner="", status="succeeded", input={"prompt": "made before webhooks", "seed": 7},
            created_at=now, started_at=now, completed_at=now, expires_at=now + timedelta(days=1), attempts=1,
            last_event_seq=3))
        connection.execute(insert(results).values(job_id=job_id, role="output", index=0, sha256="0" * 64,
                                                  media_type="image/png", size=7, data=b"old png"))
        connection.execute(insert(job_events), [
            {"job_id": job_id, "seq": seq, "kind": "status", "data": {"status": status}, "at": now}
            for seq, status in enumerate(("starting", "processing", "succeeded"), start=1)])
    return job_id


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_an_upgrade_from_0001_keeps_the_jobs_and_their_results(dialect: str, tmp_path: Path,
                                                                request: pytest.FixtureRequest) -> None:
    """A store made by the first release (revision 0001) with a finished job is upgraded to the head: the job,
    its result and its events are all there (with no worker's account: ``generation`` null), and it gets the
    webhook tables (a delivery for a new job works) and the ``generation`` column (a new result keeps it)."""
    server: PostgresServer | None = request.getfixturevalue("postgres_server") if dialect == "postgresql" else None
    url = server.create_database() if server else f"sqlite:///{tmp_path / 'old.sqlite3'}"
    engine = make_engine(url)
    try:
        assert upgrade(engine, "0001") == "0001"
        old = an_old_finished_job(engine)
        assert "webhook_deliveries" not in inspect(engine).get_table_names()
        assert upgrade(engine) == head() == "0010"
        kept = get(engine, old)
        assert kept.status == "succeeded" and kept.generation is None and len(stored_results(engine, old)) == 1
        assert len(events_after(engine, old)) == 3 and job_deliveries(engine, old) == []
        new = submit(engine, {"prompt": "after", "webhook": "https://hooks.example/x"})[0]
        claim_next(engine, "new-dispatcher")
        assert [delivery.event for delivery in job_deliveries(engine, new.id)] == ["start"]
        finish(engine, new.id, [Image(b"new png")], generation={"worker_id": "node2:worker"})
        assert get(engine, new.id).generation == {"worker_id": "node2:worker"}
    finally:
        engine.dispose()
        if server:
            server.drop_database(url)


def test_postgresql_keeps_result_bytes_uncompressed_out_of_line(postgres_server: PostgresServer) -> None:
    url = postgres_server.create_database()
    try:
        upgrade(url)
        engine = make_engine(url)
        with engine.connect() as connection:
            storage = connection.execute(text(
                "SELECT attstorage FROM pg_attribute WHERE attrelid = 'results'::regclass AND attname = 'data'"
            )).scalar_one()
        engine.dispose()
    finally:
        postgres_server.drop_database(url)
    assert storage == "e"  # EXTERNAL: no compression attempt on bytes that are compressed already
