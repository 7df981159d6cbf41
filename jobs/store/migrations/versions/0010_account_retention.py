"""Per-account retention: days an account's jobs and results are kept, and days they keep their input photo (NULL:
the service's retention).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("accounts") as table:
        table.add_column(sa.Column("results_days", sa.Integer, nullable=True))
        table.add_column(sa.Column("inputs_days", sa.Integer, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("accounts") as table:
        table.drop_column("inputs_days")
        table.drop_column("results_days")
