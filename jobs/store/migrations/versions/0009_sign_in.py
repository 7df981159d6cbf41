"""Browser sign-in: a member's password (scrypt hash, when set) and failed sign-ins, counted for the lockout.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from jobs.store.schema import SeqInteger, UTCDateTime

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("account_members") as table:
        table.add_column(sa.Column("password_hash", sa.String(200), nullable=True))
        table.add_column(sa.Column("password_set_at", UTCDateTime, nullable=True))
    op.create_table(
        "sign_in_failures",
        sa.Column("id", SeqInteger, autoincrement=True, nullable=False),
        sa.Column("name", sa.String(320), nullable=False),
        sa.Column("at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_sign_in_failures"),
    )
    op.create_index("ix_sign_in_failures_name_at", "sign_in_failures", ["name", "at"])


def downgrade() -> None:
    op.drop_index("ix_sign_in_failures_name_at", table_name="sign_in_failures")
    op.drop_table("sign_in_failures")
    with op.batch_alter_table("account_members") as table:
        table.drop_column("password_set_at")
        table.drop_column("password_hash")
