"""job_successes: when each job last succeeded, per pool

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import linkpool.models

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "job_successes",
        sa.Column("job", sa.String(length=32), nullable=False),
        sa.Column("pool", sa.String(length=64), nullable=False),
        sa.Column("succeeded_at", linkpool.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("job", "pool", name=op.f("pk_job_successes")),
    )


def downgrade() -> None:
    op.drop_table("job_successes")
