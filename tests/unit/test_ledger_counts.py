"""Counts stay exact when a list is deleted: its claimed and void links move from the live
count into the pool's ``closed_list_totals`` row, once, in the same transaction (gc's side of
it is in test_gc.py)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from linkpool.config import PoolSettings
from linkpool.models import ListState
from linkpool.pool import LinkPool
from linkpool.store import Store


def totals(store: Store, pool: str, clock) -> tuple[int, int, int]:
    counts = store.counts(pool, clock.now(), timedelta(days=1))
    return counts.claimed, counts.void, counts.claimed_24h


def close(store: Store, list_id: int, clock) -> None:
    state = store.get_list(list_id).state
    assert store.begin_reaping(list_id, state=state, now=clock.now()) is not None
    assert store.close_list(list_id, now=clock.now())


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_closing_a_list_moves_its_figures_once(database, request, clock, seed) -> None:
    store: Store = request.getfixturevalue("store" if database == "sqlite" else "pg_store")
    now = clock.now()
    old = seed(store, "nps", 4, now=now, expires_at=now + timedelta(days=10))
    seed(store, "nps", 5, now=now, expires_at=now + timedelta(days=30))
    seed(store, "other", 2, now=now, expires_at=now + timedelta(days=10))
    lp = LinkPool(engine=store.engine, pools=[pool("nps"), pool("other")], clock=clock)
    claimed = [lp.claim("nps", recipient=f"r{n}").link_id for n in range(2)]
    assert set(claimed) <= set(old)  # soonest-expiring first
    lp.claim("other", recipient="o")
    clock.advance(timedelta(days=11))
    old_list = store.lists_in_states([ListState.READY], pool="nps")[0].id

    before = totals(store, "nps", clock)
    close(store, old_list, clock)
    after = totals(store, "nps", clock)

    assert before == (2, 0, 0)
    assert after == (2, 2, 0)  # the two unclaimed links were voided by the reaping
    assert not store.close_list(old_list, now=clock.now())
    assert totals(store, "nps", clock) == after
    assert totals(store, "other", clock) == (1, 0, 0)
    assert len(store.counts("nps", clock.now(), timedelta(0)).lists) == 1


def pool(name: str) -> PoolSettings:
    return PoolSettings(name=name, survey_id="SV_" + name.ljust(15, "x"))
