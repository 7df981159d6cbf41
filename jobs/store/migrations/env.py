"""Alembic's environment for the job store: runs on the connection ``jobs.store.migrate`` hands it.

Autogenerate (``alembic revision --autogenerate``) compares against ``jobs.store.schema.metadata``; a revision
itself spells out its operations and never imports the live tables (they change later; a revision must not).
"""

from __future__ import annotations

from alembic import context

from jobs.store.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run the job store's migrations through jobs.store.migrate.upgrade(url)")

context.configure(connection=connection, target_metadata=metadata, render_as_batch=True, compare_type=True)
with context.begin_transaction():
    context.run_migrations()
