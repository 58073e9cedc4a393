"""ledger scale: counts without scanning the claim history

- ``closed_list_totals``: per pool, the claimed and void links of its deleted lists (backfilled
  here from the lists already deleted; gc adds each list it deletes from then on).
- ``ix_links_pool_claimed_at``: ``claimed (24 h)`` and ``export --since`` read a range.
- ``ix_links_list_id_status_expires_at`` replaces ``ix_links_list_id`` (its prefix): gc's
  live-claim check and the live lists' counts are read from the index alone.
- ``ix_links_writeback_pending`` gains ``pool``: a pool's pending write-backs are counted from
  the index alone; ``ix_links_writeback_failed``: a pool's failed ones, a partial index.
- ``ix_lists_live_pool``, ``ix_lists_live_expires_at``: the lists not deleted yet (partial).
- ``ix_links_pool_status`` goes: nothing reads it any more, and every claim paid to update it.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 09:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

BACKFILL = """
INSERT INTO closed_list_totals (pool, lists, claimed, void)
SELECT lists.pool,
       COUNT(DISTINCT lists.id),
       COALESCE(SUM(CASE WHEN links.status = 'claimed' THEN 1 ELSE 0 END), 0),
       COALESCE(SUM(CASE WHEN links.status = 'void' THEN 1 ELSE 0 END), 0)
FROM lists LEFT JOIN links ON links.list_id = lists.id
WHERE lists.state = 'deleted'
GROUP BY lists.pool
"""

LIVE_LIST = {
    "sqlite_where": sa.text("state != 'deleted'"),
    "postgresql_where": sa.text("state != 'deleted'"),
}
LIVE_LIST_INDEXES = {
    "ix_lists_live_pool": ["pool", "state"],
    "ix_lists_live_expires_at": ["state", "expires_at"],
}
PENDING = "pending"


def writeback_is(state: str) -> dict[str, sa.TextClause]:
    condition = f"writeback = '{state}'"
    return {"sqlite_where": sa.text(condition), "postgresql_where": sa.text(condition)}


def upgrade() -> None:
    op.create_table(
        "closed_list_totals",
        sa.Column("pool", sa.String(length=64), nullable=False),
        sa.Column("lists", sa.Integer(), nullable=False),
        sa.Column("claimed", sa.Integer(), nullable=False),
        sa.Column("void", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("pool", name=op.f("pk_closed_list_totals")),
    )
    op.execute(BACKFILL)
    with op.batch_alter_table("lists", schema=None) as batch_op:
        for name, columns in LIVE_LIST_INDEXES.items():
            batch_op.create_index(name, columns, unique=False, **LIVE_LIST)
    with op.batch_alter_table("links", schema=None) as batch_op:
        batch_op.create_index(
            "ix_links_list_id_status_expires_at",
            ["list_id", "status", "expires_at"],
            unique=False,
        )
        batch_op.drop_index("ix_links_list_id")
        batch_op.drop_index("ix_links_pool_status")
        batch_op.create_index("ix_links_pool_claimed_at", ["pool", "claimed_at"], unique=False)
        batch_op.create_index(
            "ix_links_writeback_failed", ["pool"], unique=False, **writeback_is("failed")
        )
        batch_op.drop_index("ix_links_writeback_pending", **writeback_is(PENDING))
        batch_op.create_index(
            "ix_links_writeback_pending",
            ["writeback_due_at", "pool"],
            unique=False,
            **writeback_is(PENDING),
        )


def downgrade() -> None:
    with op.batch_alter_table("links", schema=None) as batch_op:
        batch_op.drop_index("ix_links_writeback_pending", **writeback_is(PENDING))
        batch_op.create_index(
            "ix_links_writeback_pending",
            ["writeback_due_at"],
            unique=False,
            **writeback_is(PENDING),
        )
        batch_op.drop_index("ix_links_writeback_failed", **writeback_is("failed"))
        batch_op.drop_index("ix_links_pool_claimed_at")
        batch_op.create_index("ix_links_pool_status", ["pool", "status"], unique=False)
        batch_op.create_index("ix_links_list_id", ["list_id"], unique=False)
        batch_op.drop_index("ix_links_list_id_status_expires_at")
    with op.batch_alter_table("lists", schema=None) as batch_op:
        for name in LIVE_LIST_INDEXES:
            batch_op.drop_index(name, **LIVE_LIST)
    op.drop_table("closed_list_totals")
