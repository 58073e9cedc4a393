"""erasure: when a claim's recipient was forgotten, and the clearing of its contact

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import linkpool.models

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("links") as batch:
        batch.add_column(sa.Column("erased_at", linkpool.models.UTCDateTime(timezone=True)))
        batch.add_column(sa.Column("erasure", sa.String(length=16)))
        batch.add_column(sa.Column("erasure_fields", sa.Text()))
        batch.add_column(
            sa.Column("erasure_attempts", sa.Integer(), server_default=sa.text("0"), nullable=False)
        )
        batch.add_column(sa.Column("erasure_due_at", linkpool.models.UTCDateTime(timezone=True)))
        batch.add_column(sa.Column("erasure_error", sa.Text()))
    op.create_index(
        "ix_links_erasure_pending",
        "links",
        ["erasure_due_at"],
        unique=False,
        sqlite_where=sa.text("erasure = 'pending'"),
        postgresql_where=sa.text("erasure = 'pending'"),
    )


def downgrade() -> None:
    op.drop_index(
        "ix_links_erasure_pending",
        table_name="links",
        sqlite_where=sa.text("erasure = 'pending'"),
        postgresql_where=sa.text("erasure = 'pending'"),
    )
    with op.batch_alter_table("links") as batch:
        for column in (
            "erasure_error",
            "erasure_due_at",
            "erasure_attempts",
            "erasure_fields",
            "erasure",
            "erased_at",
        ):
            batch.drop_column(column)
