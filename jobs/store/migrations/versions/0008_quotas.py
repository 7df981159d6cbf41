"""Quotas: an account's most jobs queued or running at once and most images per UTC day (NULL: no limit).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("accounts") as table:
        table.add_column(sa.Column("max_running", sa.Integer, nullable=True))
        table.add_column(sa.Column("daily_images", sa.Integer, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("accounts") as table:
        table.drop_column("daily_images")
        table.drop_column("max_running")
