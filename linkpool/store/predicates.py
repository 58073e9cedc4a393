"""Conditions written into the SQL as literals, so that partial indexes apply.

A planner uses a partial index only when it can see that the query's WHERE implies the
index's: with the value as a bound parameter it cannot (PostgreSQL's generic plans, SQLite
always), and SQLite proves no implication it is not shown, so ``state IN ('ready', …)`` alone
never selects an index over ``state != 'deleted'``: the queries also say ``state != 'deleted'``.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from linkpool.models import ListState, lists


def literal(value: str) -> sa.ColumnElement[Any]:
    return sa.literal_column(f"'{value}'")


def list_not_deleted() -> sa.ColumnElement[bool]:
    """The predicate of ``ix_lists_live_pool`` and ``ix_lists_live_expires_at``."""
    return lists.c.state != literal(ListState.DELETED)


__all__: list[str] = []  # internal: see linkpool.store.Store
