"""answered counts without scanning the response history

- ``closed_list_totals`` gains ``answered`` and ``finished``: per pool, the answered and
  finished claims of its deleted lists (backfilled here from the lists already deleted; gc
  adds each list it deletes from then on, and the responses job a late response on one).
  Claims ``linkpool archive`` removed before this revision are not in the backfill: the old
  count no longer held them either.
- ``ix_links_answered_list_id``: the answered and finished claims of the lists not deleted
  yet, from the index alone (``response_id`` in it for SQLite's sake; partial: the claim sets
  no response, so it never writes it).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 09:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

BACKFILL = """
UPDATE closed_list_totals
SET answered = (
        SELECT COUNT(*) FROM links JOIN lists ON lists.id = links.list_id
        WHERE lists.pool = closed_list_totals.pool AND lists.state = 'deleted'
          AND links.response_id IS NOT NULL),
    finished = (
        SELECT COUNT(*) FROM links JOIN lists ON lists.id = links.list_id
        WHERE lists.pool = closed_list_totals.pool AND lists.state = 'deleted'
          AND links.response_id IS NOT NULL AND links.response_finished = TRUE)
"""

ANSWERED = {
    "sqlite_where": sa.text("response_id IS NOT NULL"),
    "postgresql_where": sa.text("response_id IS NOT NULL"),
}


def upgrade() -> None:
    with op.batch_alter_table("closed_list_totals", schema=None) as batch_op:
        for name in ("answered", "finished"):
            batch_op.add_column(
                sa.Column(name, sa.Integer(), server_default=sa.text("0"), nullable=False)
            )
    op.execute(BACKFILL)
    with op.batch_alter_table("links", schema=None) as batch_op:
        batch_op.create_index(
            "ix_links_answered_list_id",
            ["list_id", "response_finished", "response_id"],
            unique=False,
            **ANSWERED,
        )


def downgrade() -> None:
    with op.batch_alter_table("links", schema=None) as batch_op:
        batch_op.drop_index("ix_links_answered_list_id", **ANSWERED)
    with op.batch_alter_table("closed_list_totals", schema=None) as batch_op:
        batch_op.drop_column("finished")
        batch_op.drop_column("answered")
