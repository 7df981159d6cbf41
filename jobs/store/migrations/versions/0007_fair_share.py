"""Fair share: an account's weight (default 1) and an index on jobs' completion time (GPU time used lately).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("accounts") as table:  # SQLite: ALTER TABLE ... ADD COLUMN with its default
        table.add_column(sa.Column("weight", sa.Float, nullable=False, server_default="1"))
    op.create_index("ix_jobs_completed_at", "jobs", ["completed_at"])


def downgrade() -> None:
    op.drop_index("ix_jobs_completed_at", table_name="jobs")
    with op.batch_alter_table("accounts") as table:
        table.drop_column("weight")
