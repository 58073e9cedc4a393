"""The response figures read indexes, never the claim history: no query that
``response_counts`` runs reads every claim, or every answered claim, of the pool, on SQLite or
PostgreSQL (bench/scale.py measures the cost; this pins the plans, which a predicate that a
planner cannot match to a partial index would silently turn into a scan of the history)."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from bench.capture import captured_selects
from bench.ledger import seed_history
from linkpool.models import links
from linkpool.store import ResponseChange, Store

ANSWERED_FOREVER = {"ix_links_answered", "ix_links_answered_list_id"}
"""Partial indexes over answered claims: a claim stays answered, so they hold the history."""


def plan_steps(engine: sa.engine.Engine, statements: list[tuple[str, Any]]) -> list[str]:
    with engine.connect() as connection:
        return [
            str(row[-1])
            for sql, params in statements
            for row in connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", params)
        ]


def partial_indexes() -> set[str]:
    """The links indexes that hold live rows only: scanning one costs the stock, not history."""
    partial = {
        str(index.name)
        for index in links.indexes
        if index.dialect_options["sqlite"]["where"] is not None
    }
    return partial - ANSWERED_FOREVER


def reads_history(step: str, live_only: set[str]) -> bool:
    """A step over links that is neither on a live-only index nor narrower than the whole pool
    (``pool=?`` alone on an index of every claim, or of every answered one, reads every claim
    the pool ever made, or every answer)."""
    if not step.startswith(("SCAN links", "SEARCH links")):
        return False
    index = re.search(r"INDEX (\w+)", step)
    if index is not None and index.group(1) in live_only:
        return False
    return step.startswith("SCAN") or step.endswith("(pool=?)")


HISTORY, LISTS = 20_000, 200
SHARES = {"answered": 30, "finished": 27}  # of every 100 claims of the history
EXPECTED = (HISTORY * 30 // 100 + 10, HISTORY * 27 // 100 + 10)  # answered, finished


def seed_ledger(store: Store, seed, clock) -> None:
    """A year of claims in deleted lists (3 in 10 answered, most finished), as gc leaves them,
    and a live list of 50 links: 20 claimed, 10 of them answered; then fresh statistics."""
    end = clock.now() - timedelta(days=2)  # its last responses are a day old, too
    seed_history(store.engine, "nps", HISTORY, end=end, list_size=HISTORY // LISTS, **SHARES)
    now = clock.now()
    live = seed(store, "nps", 50, now=now, expires_at=now + timedelta(days=30))
    with store.write() as connection:
        claim = sa.update(links).where(links.c.id.in_(live[:20]))
        connection.execute(claim.values(status="claimed", claimed_at=now))
    store.record_responses([ResponseChange(n, f"R_live{n}", True, now, None) for n in live[:10]])
    with store.engine.connect() as connection:
        connection.execute(sa.text("ANALYZE"))
        connection.commit()


def test_response_figures_never_read_the_claim_history(store: Store, seed, clock) -> None:
    seed_ledger(store, seed, clock)
    with captured_selects(store.engine) as statements:
        counts = store.response_counts("nps", clock.now())
    assert (counts.answered, counts.finished, counts.answered_24h) == (*EXPECTED, 10)
    live_only = partial_indexes()
    steps = plan_steps(store.engine, statements)
    history_reads = [step for step in steps if reads_history(step, live_only)]
    assert history_reads == [], steps
    used = " ".join(steps)
    assert "ix_links_answered_list_id (list_id=?)" in used
    assert "ix_links_answered (pool=? AND responded_at>?)" in used


def postgres_plan_nodes(engine: sa.engine.Engine, statements: list[tuple[str, Any]]) -> list[dict]:
    nodes: list[dict] = []

    def walk(node: dict) -> None:
        nodes.append(node)
        for child in node.get("Plans", []):
            walk(child)

    with engine.connect() as connection:
        for sql, params in statements:
            plan = connection.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {sql}", params).scalar()
            walk((json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"])
    return nodes


@pytest.mark.postgres
def test_response_figures_never_read_the_claim_history_on_postgres(pg_store, seed, clock) -> None:
    seed_ledger(pg_store, seed, clock)
    with captured_selects(pg_store.engine) as statements:
        counts = pg_store.response_counts("nps", clock.now())
    assert (counts.answered, counts.finished, counts.answered_24h) == (*EXPECTED, 10)
    nodes = postgres_plan_nodes(pg_store.engine, statements)
    scans = [node for node in nodes if node.get("Relation Name") == "links"]
    assert scans and all(node["Node Type"] != "Seq Scan" for node in scans), scans
    by_index = {node["Index Name"]: node for node in nodes if "Index Name" in node}
    assert "ix_links_answered_list_id" in by_index, nodes
    assert "responded_at" in by_index["ix_links_answered"]["Index Cond"], nodes
