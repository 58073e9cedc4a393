"""initial schema: lists, links, leases

Revision ID: 0001
Revises:
Create Date: 2026-11-22 06:15:54.625000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import linkpool.models

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "leases",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("holder", sa.String(length=200), nullable=False),
        sa.Column("acquired_at", linkpool.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", linkpool.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_leases")),
    )
    op.create_table(
        "lists",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("pool", sa.String(length=64), nullable=False),
        sa.Column("survey_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("mailing_list_id", sa.String(length=32), nullable=True),
        sa.Column("import_id", sa.String(length=64), nullable=True),
        sa.Column("distribution_id", sa.String(length=32), nullable=True),
        sa.Column("expires_at", linkpool.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("links_stored", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("shortfall", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("created_at", linkpool.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", linkpool.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", linkpool.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lists")),
        sa.UniqueConstraint("distribution_id", name=op.f("uq_lists_distribution_id")),
        sa.UniqueConstraint("mailing_list_id", name=op.f("uq_lists_mailing_list_id")),
        sa.UniqueConstraint("name", name=op.f("uq_lists_name")),
    )
    with op.batch_alter_table("lists", schema=None) as batch_op:
        batch_op.create_index("ix_lists_pool_state", ["pool", "state"], unique=False)

    op.create_table(
        "links",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("list_id", sa.Integer(), nullable=False),
        sa.Column("pool", sa.String(length=64), nullable=False),
        sa.Column("ext_ref", sa.String(length=100), nullable=False),
        sa.Column("contact_id", sa.String(length=32), nullable=False),
        sa.Column("contact_lookup_id", sa.String(length=32), nullable=True),
        sa.Column("url", sa.String(length=500), nullable=False),
        sa.Column("expires_at", linkpool.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("recipient", sa.String(length=255), nullable=True),
        sa.Column("idempotency_key", sa.String(length=255), nullable=True),
        sa.Column("data", sa.Text(), nullable=True),
        sa.Column("claimed_at", linkpool.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("voided_at", linkpool.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("writeback", sa.String(length=16), nullable=True),
        sa.Column("writeback_attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("writeback_due_at", linkpool.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("writeback_error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["list_id"], ["lists.id"], name=op.f("fk_links_list_id_lists")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_links")),
        sa.UniqueConstraint("ext_ref", name=op.f("uq_links_ext_ref")),
        sa.UniqueConstraint("pool", "idempotency_key", name=op.f("uq_links_pool_idempotency_key")),
        sa.UniqueConstraint("url", name=op.f("uq_links_url")),
    )
    with op.batch_alter_table("links", schema=None) as batch_op:
        batch_op.create_index(
            "ix_links_claimable",
            ["pool", "expires_at"],
            unique=False,
            sqlite_where=sa.text("status = 'available'"),
            postgresql_where=sa.text("status = 'available'"),
        )
        batch_op.create_index(batch_op.f("ix_links_list_id"), ["list_id"], unique=False)
        batch_op.create_index("ix_links_pool_status", ["pool", "status"], unique=False)
        batch_op.create_index(
            "ix_links_writeback_pending",
            ["writeback_due_at"],
            unique=False,
            sqlite_where=sa.text("writeback = 'pending'"),
            postgresql_where=sa.text("writeback = 'pending'"),
        )


def downgrade() -> None:
    with op.batch_alter_table("links", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_links_writeback_pending",
            sqlite_where=sa.text("writeback = 'pending'"),
            postgresql_where=sa.text("writeback = 'pending'"),
        )
        batch_op.drop_index("ix_links_pool_status")
        batch_op.drop_index(batch_op.f("ix_links_list_id"))
        batch_op.drop_index(
            "ix_links_claimable",
            sqlite_where=sa.text("status = 'available'"),
            postgresql_where=sa.text("status = 'available'"),
        )

    op.drop_table("links")
    with op.batch_alter_table("lists", schema=None) as batch_op:
        batch_op.drop_index("ix_lists_pool_state")

    op.drop_table("lists")
    op.drop_table("leases")
