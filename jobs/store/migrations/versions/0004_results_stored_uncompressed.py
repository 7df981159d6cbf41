"""PostgreSQL keeps result bytes out of line and uncompressed (``STORAGE EXTERNAL``): PNG and JPEG bytes are
compressed already, so TOAST's own compression only costs CPU on every write; SQLite has no such setting.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE results ALTER COLUMN data SET STORAGE EXTERNAL")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE results ALTER COLUMN data SET STORAGE EXTENDED")
