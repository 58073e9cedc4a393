"""The pool totals that never read the history: the lists not deleted yet, counted link by
link through indexes, plus one ``closed_list_totals`` row per pool for the deleted ones.

gc adds a list's figures to that row in the transaction that marks the list deleted
(``list_figures``, ``add_closed_totals``); the responses job adds a response that arrives on a
claim of a list already deleted; the counts (``counts_query``, ``response_counts``) add the
row to the live lists' part in one statement, so that both come from one snapshot.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from linkpool.models import LinkStatus, ListState, closed_list_totals, links, lists
from linkpool.store.predicates import list_not_deleted

CLOSED_FIGURES = ("lists", "claimed", "void", "answered", "finished")
"""The columns of ``closed_list_totals`` that sum the deleted lists."""

NOT_DELETED = tuple(state for state in ListState if state != ListState.DELETED)


def answered() -> sa.ColumnElement[bool]:
    """The predicate of ``ix_links_answered`` and ``ix_links_answered_list_id``."""
    return links.c.response_id.is_not(None)


def finished() -> sa.ColumnElement[bool]:
    """An answered claim whose response is finished (with ``answered()``)."""
    return links.c.response_finished.is_(True)


def count_if(condition: sa.ColumnElement[bool], name: str) -> sa.Label[Any]:
    total = sa.func.coalesce(sa.func.sum(sa.case((condition, 1), else_=0)), 0)
    return total.label(name)


def count_where(*conditions: sa.ColumnElement[bool] | sa.TextClause) -> sa.ScalarSelect[Any]:
    return sa.select(sa.func.count()).select_from(links).where(*conditions).scalar_subquery()


def live_lists(pool: str) -> sa.Select[Any]:
    """The ids of the pool's lists not deleted, through ``ix_lists_live_pool``."""
    return sa.select(lists.c.id).where(
        lists.c.pool == pool, lists.c.state.in_(NOT_DELETED), list_not_deleted()
    )


def closed_total(pool: str, column: sa.Column[Any]) -> sa.ScalarSelect[Any]:
    """One figure of the pool's deleted lists (0 before gc deleted any)."""
    total = sa.func.coalesce(sa.func.sum(column), 0)
    return sa.select(total).where(closed_list_totals.c.pool == pool).scalar_subquery()


def list_figures(connection: Connection, list_id: int) -> dict[str, int]:
    """What one list adds to its pool's ``closed_list_totals`` row when it is deleted."""
    query = sa.select(
        count_if(links.c.status == LinkStatus.CLAIMED, "claimed"),
        count_if(links.c.status == LinkStatus.VOID, "void"),
        count_if(answered(), "answered"),
        count_if(sa.and_(answered(), finished()), "finished"),
    ).where(links.c.list_id == list_id)
    row = connection.execute(query).mappings().one()
    return {"lists": 1, **{name: int(value) for name, value in row.items()}}


def add_closed_totals(connection: Connection, pool: str, figures: Mapping[str, int]) -> None:
    """Add ``figures`` (any of ``CLOSED_FIGURES``, by name) to the pool's row, creating the
    row on first use."""
    values = {name: figures.get(name, 0) for name in CLOSED_FIGURES}
    insert = (
        postgresql.insert(closed_list_totals)
        if connection.dialect.name == "postgresql"
        else sqlite.insert(closed_list_totals)
    )
    totals = closed_list_totals.c
    connection.execute(
        insert.values(pool=pool, **values).on_conflict_do_update(
            index_elements=[totals.pool],
            set_={name: totals[name] + amount for name, amount in values.items()},
        )
    )


__all__: list[str] = []  # internal: see linkpool.store.Store
