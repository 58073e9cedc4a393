"""The response figures read indexes, never the claim history: on SQLite, no query that
``response_counts`` runs reads every claim of the pool (bench/scale.py measures the
cost; this pins the plans, which a predicate that SQLite cannot match to a partial index
would silently turn into a scan of every claim)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa

from linkpool.models import links
from linkpool.store import Store


@contextmanager
def captured_selects(engine: sa.engine.Engine) -> Iterator[list[tuple[str, Any]]]:
    statements: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, sql: str, params: Any, context: Any, many: bool) -> None:
        if sql.lstrip().upper().startswith("SELECT"):
            statements.append((sql, params))

    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)


def plan_steps(engine: sa.engine.Engine, statements: list[tuple[str, Any]]) -> list[str]:
    with engine.connect() as connection:
        return [
            str(row[-1])
            for sql, params in statements
            for row in connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", params)
        ]


def partial_indexes() -> set[str]:
    """The links indexes that hold live rows only: scanning one costs the stock, not history."""
    return {
        str(index.name)
        for index in links.indexes
        if index.dialect_options["sqlite"]["where"] is not None
    }


def reads_history(step: str, live_only: set[str]) -> bool:
    """A step over links that is neither on a live-only index nor narrower than the whole pool
    (``pool=?`` alone on a full index reads every claim the pool ever made)."""
    if not step.startswith(("SCAN links", "SEARCH links")):
        return False
    index = re.search(r"INDEX (\w+)", step)
    if index is not None and index.group(1) in live_only:
        return False
    return step.startswith("SCAN") or step.endswith("(pool=?)")


def test_response_figures_never_read_the_claim_history(store: Store, clock) -> None:
    with captured_selects(store.engine) as statements:
        store.response_counts("nps", clock.now())
    assert len(statements) >= 3
    live_only = partial_indexes()
    history_reads = [
        step for step in plan_steps(store.engine, statements) if reads_history(step, live_only)
    ]
    assert history_reads == [], history_reads
