"""Counts stay exact when a list is deleted: its claimed, void, answered and finished links move
from the live count into the pool's ``closed_list_totals`` row, once, in the same transaction
(gc's side of it is in test_gc.py); a response arriving on a claim of a deleted list is added
to that row, and archive removing the claims changes nothing."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from linkpool.archive import archive
from linkpool.config import PoolSettings
from linkpool.models import ListState, closed_list_totals
from linkpool.pool import LinkPool
from linkpool.store import ResponseChange, Store


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


def answers(store: Store, pool: str, clock) -> tuple[int, int, int]:
    counts = store.response_counts(pool, clock.now())
    return counts.answered, counts.finished, counts.answered_24h


def respond(store: Store, link_id: int, clock, *, finished: bool = True) -> None:
    change = ResponseChange(link_id, f"R_{link_id:015d}", finished, clock.now(), None)
    store.record_responses([change])


def closed_answers(store: Store, pool: str) -> tuple[int, int]:
    totals = closed_list_totals.c
    query = sa.select(totals.answered, totals.finished).where(totals.pool == pool)
    with store.read() as connection:
        row = connection.execute(query).one_or_none()
    return (0, 0) if row is None else (row.answered, row.finished)


@pytest.fixture(params=["sqlite", "postgres"])
def ledger(request, clock, seed) -> dict[str, Any]:
    """Pool nps: an old list of 4 links, all claimed (0 and 1 answered, 1 not finished), a new
    one of 5 (one claimed and answered); pool other: one claim, answered."""
    store: Store = request.getfixturevalue("store" if request.param == "sqlite" else "pg_store")
    now = clock.now()
    old = seed(store, "nps", 4, now=now, expires_at=now + timedelta(days=10))
    new = seed(store, "nps", 5, now=now, expires_at=now + timedelta(days=30))
    other = seed(store, "other", 2, now=now, expires_at=now + timedelta(days=10))
    lp = LinkPool(engine=store.engine, pools=[pool("nps"), pool("other")], clock=clock)
    claimed = [lp.claim("nps", recipient=f"r{n}").link_id for n in range(5)]
    assert claimed == [*old, new[0]]  # soonest-expiring first
    lp.claim("other", recipient="o")
    for link_id, finished in ((old[0], True), (old[1], False), (new[0], True), (other[0], True)):
        respond(store, link_id, clock, finished=finished)
    old_list = store.lists_in_states([ListState.READY], pool="nps")[0].id
    return {"store": store, "old": old, "new": new, "old_list": old_list}


def test_answered_and_finished_move_to_the_closed_totals_once(ledger, clock) -> None:
    store = ledger["store"]
    assert answers(store, "nps", clock) == (3, 2, 3)
    clock.advance(timedelta(days=11))
    assert answers(store, "nps", clock) == (3, 2, 0)  # recorded 11 days ago

    close(store, ledger["old_list"], clock)

    assert closed_answers(store, "nps") == (2, 1)
    assert answers(store, "nps", clock) == (3, 2, 0)
    assert not store.close_list(ledger["old_list"], now=clock.now())
    assert answers(store, "nps", clock) == (3, 2, 0)
    assert answers(store, "other", clock) == (1, 1, 0)


def test_a_late_response_on_a_deleted_list_is_added_to_its_closed_totals(ledger, clock) -> None:
    store, old = ledger["store"], ledger["old"]
    clock.advance(timedelta(days=11))
    close(store, ledger["old_list"], clock)

    respond(store, old[2], clock)  # the export of a response recorded before gc ran

    assert closed_answers(store, "nps") == (3, 2)
    assert answers(store, "nps", clock) == (4, 3, 1)
    respond(store, old[2], clock)  # the overlap reads it again: nothing changes
    assert answers(store, "nps", clock) == (4, 3, 1)
    respond(store, old[1], clock, finished=True)  # now finished: finished moves, answered not
    assert closed_answers(store, "nps") == (3, 3)
    assert answers(store, "nps", clock) == (4, 4, 2)
    assert answers(store, "other", clock) == (1, 1, 0)


def test_archived_answered_claims_still_count(ledger, clock, tmp_path: Path) -> None:
    store = ledger["store"]
    clock.advance(timedelta(days=11))
    close(store, ledger["old_list"], clock)
    before = answers(store, "nps", clock), store.counts("nps", clock.now(), timedelta(0)).claimed

    result = archive(store, before=clock.now(), path=tmp_path / "a.jsonl.gz")

    assert result.removed == 4
    after = answers(store, "nps", clock), store.counts("nps", clock.now(), timedelta(0)).claimed
    assert after == before == ((3, 2, 0), 5)


def test_a_response_racing_gc_is_counted_once(ledger, clock) -> None:
    """gc marks the list deleted while the responses job's transaction is open: gc waits for
    it (the job locked the list), then counts the new answer among the list's figures."""
    store, old = ledger["store"], ledger["old"]
    clock.advance(timedelta(days=11))
    state = store.get_list(ledger["old_list"]).state
    assert store.begin_reaping(ledger["old_list"], state=state, now=clock.now()) is not None
    gc = threading.Thread(
        target=store.close_list, args=(ledger["old_list"],), kwargs={"now": clock.now()}
    )

    def gc_meanwhile(conn: Any, cursor: Any, sql: str, *args: Any) -> None:
        # Right after the job has read its lists' states (and locked them), before it
        # records the answer: the interleaving in which gc would count the list without it.
        if sql.lstrip().startswith("SELECT lists.id, lists.state") and gc.ident is None:
            gc.start()
            gc.join(timeout=1)  # without the job's lock it would finish here

    sa.event.listen(store.engine, "after_cursor_execute", gc_meanwhile)
    try:
        respond(store, old[2], clock)
    finally:
        sa.event.remove(store.engine, "after_cursor_execute", gc_meanwhile)
    assert gc.ident is not None, "the job no longer reads its lists' states this way"
    gc.join()

    assert store.get_list(ledger["old_list"]).state == ListState.DELETED
    assert closed_answers(store, "nps") == (3, 2)
    assert answers(store, "nps", clock) == (4, 3, 1)


def pool(name: str) -> PoolSettings:
    return PoolSettings(name=name, survey_id="SV_" + name.ljust(15, "x"))
