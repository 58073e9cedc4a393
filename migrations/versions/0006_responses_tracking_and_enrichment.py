"""responses: the response on each claim, per-pool export cursors, bulk update jobs, strays

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 09:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import linkpool.models

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_OPEN = "enrichment IN ('pending', 'sending', 'verify', 'failed')"


def upgrade() -> None:
    op.create_table(
        "response_cursors",
        sa.Column("pool", sa.String(length=64), nullable=False),
        sa.Column("survey_id", sa.String(length=32), nullable=False),
        sa.Column("recorded_until", linkpool.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("export_progress_id", sa.String(length=64), nullable=True),
        sa.Column("export_start", linkpool.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("export_requested_at", linkpool.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("updated_at", linkpool.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("pool", name=op.f("pk_response_cursors")),
    )
    op.create_table(
        "response_updates",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("pool", sa.String(length=64), nullable=False),
        sa.Column("survey_id", sa.String(length=32), nullable=False),
        sa.Column("progress_id", sa.String(length=64), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("items", sa.Integer(), nullable=False),
        sa.Column("created_at", linkpool.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", linkpool.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_response_updates")),
    )
    with op.batch_alter_table("response_updates", schema=None) as batch_op:
        batch_op.create_index("ix_response_updates_pool_state", ["pool", "state"], unique=False)
    op.create_table(
        "stray_responses",
        sa.Column("response_id", sa.String(length=64), nullable=False),
        sa.Column("pool", sa.String(length=64), nullable=False),
        sa.Column("ext_ref", sa.String(length=100), nullable=False),
        sa.Column("link_status", sa.String(length=16), nullable=False),
        sa.Column("recorded_at", linkpool.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("seen_at", linkpool.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("response_id", name=op.f("pk_stray_responses")),
    )
    with op.batch_alter_table("stray_responses", schema=None) as batch_op:
        batch_op.create_index("ix_stray_responses_pool", ["pool"], unique=False)
    with op.batch_alter_table("links", schema=None) as batch_op:
        batch_op.add_column(sa.Column("response_id", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("response_finished", sa.Boolean(), nullable=True))
        batch_op.add_column(
            sa.Column("responded_at", linkpool.models.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("enrichment", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("enrichment_update_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("enrichment_error", sa.Text(), nullable=True))
        batch_op.create_unique_constraint(batch_op.f("uq_links_response_id"), ["response_id"])
        batch_op.create_foreign_key(
            batch_op.f("fk_links_enrichment_update_id_response_updates"),
            "response_updates",
            ["enrichment_update_id"],
            ["id"],
        )
        batch_op.create_index(
            "ix_links_answered",
            ["pool", "responded_at"],
            unique=False,
            sqlite_where=sa.text("response_id IS NOT NULL"),
            postgresql_where=sa.text("response_id IS NOT NULL"),
        )
        batch_op.create_index(
            "ix_links_enrichment_unsettled",
            ["pool", "enrichment"],
            unique=False,
            sqlite_where=sa.text(_OPEN),
            postgresql_where=sa.text(_OPEN),
        )


def downgrade() -> None:
    with op.batch_alter_table("links", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_links_enrichment_unsettled",
            sqlite_where=sa.text(_OPEN),
            postgresql_where=sa.text(_OPEN),
        )
        batch_op.drop_index(
            "ix_links_answered",
            sqlite_where=sa.text("response_id IS NOT NULL"),
            postgresql_where=sa.text("response_id IS NOT NULL"),
        )
        batch_op.drop_constraint(
            batch_op.f("fk_links_enrichment_update_id_response_updates"), type_="foreignkey"
        )
        batch_op.drop_constraint(batch_op.f("uq_links_response_id"), type_="unique")
        batch_op.drop_column("enrichment_error")
        batch_op.drop_column("enrichment_update_id")
        batch_op.drop_column("enrichment")
        batch_op.drop_column("responded_at")
        batch_op.drop_column("response_finished")
        batch_op.drop_column("response_id")
    with op.batch_alter_table("stray_responses", schema=None) as batch_op:
        batch_op.drop_index("ix_stray_responses_pool")
    op.drop_table("stray_responses")
    with op.batch_alter_table("response_updates", schema=None) as batch_op:
        batch_op.drop_index("ix_response_updates_pool_state")
    op.drop_table("response_updates")
    op.drop_table("response_cursors")
