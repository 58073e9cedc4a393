"""The race: real processes claim from one pool at once, on real SQLite and real PostgreSQL.

Each process first claims a handful of shared idempotency keys (every process the same keys,
recipients and data, so all must get the same link per key), then claims without a key until
the pool is exhausted. Afterwards every seeded link must have been handed out exactly once.
"""

from __future__ import annotations

import multiprocessing
from collections import Counter
from datetime import timedelta

import pytest

from linkpool import InvalidClaim, LinkPool, ManualClock, PoolExhausted, PoolSettings
from linkpool.db import create_engine
from linkpool.store import Store
from tests.conftest import START, SURVEY_ID, seed_links

PROCESSES = 8
LINKS = 400
SHARED_KEYS = 16
POOL = PoolSettings(
    name="race", survey_id=SURVEY_ID, link_ttl=timedelta(days=60), min_remaining=timedelta(days=1)
)


def claimer(url: str, worker: int, start, results) -> None:
    """One process: wait for the others, claim shared keys, then claim until exhausted."""
    with LinkPool(database_url=url, pools=[POOL]) as lp:
        start.wait()
        keyed = {}
        for n in range(SHARED_KEYS):
            claim = lp.claim("race", recipient=f"shared-{n}", key=f"k-{n}", data={"n": n})
            keyed[f"k-{n}"] = claim.link_id
        plain = []
        while True:
            try:
                plain.append(lp.claim("race", recipient=f"w{worker}-{len(plain)}").link_id)
            except PoolExhausted:
                break
    results.put((worker, keyed, plain))


def race(url: str) -> list[tuple[int, dict[str, int], list[int]]]:
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(PROCESSES)
    results = context.Queue()
    processes = [
        context.Process(target=claimer, args=(url, worker, start, results))
        for worker in range(PROCESSES)
    ]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(timeout=30)
        assert process.exitcode == 0
    return outcomes


def seed_pool(url: str) -> set[int]:
    engine = create_engine(url)
    store = Store(engine)
    # Two lists with different expiries: the race must not care.
    expiry = START + timedelta(days=50)
    ids = seed_links(store, "race", LINKS // 2, now=START, expires_at=expiry)
    ids += seed_links(store, "race", LINKS // 2, now=START, expires_at=expiry + timedelta(days=1))
    engine.dispose()
    return set(ids)


def assert_each_link_once(seeded: set[int], outcomes) -> None:
    keyed_links = {}
    handed_out: list[int] = []
    for _worker, keyed, plain in outcomes:
        handed_out += plain
        for key, link_id in keyed.items():
            assert keyed_links.setdefault(key, link_id) == link_id, f"{key} got two links"
    handed_out += keyed_links.values()
    duplicates = [link for link, n in Counter(handed_out).items() if n > 1]
    assert duplicates == []
    assert set(handed_out) == seeded
    assert len(keyed_links) == SHARED_KEYS


def test_race_on_sqlite_file_database(sqlite_url: str) -> None:
    seeded = seed_pool(sqlite_url)
    assert_each_link_once(seeded, race(sqlite_url))


@pytest.mark.postgres
def test_race_on_postgres(pg_engine, postgres_url: str) -> None:
    seeded = seed_pool(postgres_url)
    assert_each_link_once(seeded, race(postgres_url))


def claim_in_forked_child(lp: LinkPool, results) -> None:
    results.put(lp.claim("race", recipient="child").link_id)


def test_a_forked_child_claims_on_its_own_connections(sqlite_url: str) -> None:
    seed_pool(sqlite_url)
    with LinkPool(database_url=sqlite_url, pools=[POOL]) as lp:
        parent_claim = lp.claim("race", recipient="parent").link_id
        context = multiprocessing.get_context("fork")
        results = context.Queue()
        child = context.Process(target=claim_in_forked_child, args=(lp, results))
        child.start()
        child_claim = results.get(timeout=30)
        child.join(timeout=30)
        assert child.exitcode == 0
        assert child_claim != parent_claim
        assert lp.claim("race", recipient="parent-again").link_id not in {parent_claim, child_claim}


@pytest.mark.parametrize(
    "arguments",
    [{"recipient": "cust\x00"}, {"key": "k\x00"}, {"data": {"note": "a\x00b"}}],
    ids=["nul-recipient", "nul-key", "nul-in-data"],
)
def test_postgres_never_sees_a_nul_it_refuses(
    postgres_url: str, pg_store, arguments: dict[str, object]
) -> None:
    """PostgreSQL text cannot hold NUL: a recipient or key with one is an InvalidClaim before
    the database; inside data it is escaped by JSON and stored."""
    clock = ManualClock(START)
    pool = PoolSettings(name="nul", survey_id=SURVEY_ID, link_ttl=timedelta(days=60))
    seed_links(pg_store, "nul", 1, now=START, expires_at=START + timedelta(days=30))
    call: dict[str, object] = {"recipient": "cust-1", "key": "k1", **arguments}
    with LinkPool(database_url=postgres_url, pools=[pool], clock=clock) as lp:
        if "data" in arguments:
            assert lp.claim("nul", **call).data == arguments["data"]  # type: ignore[arg-type]
        else:
            with pytest.raises(InvalidClaim, match="NUL character"):
                lp.claim("nul", **call)  # type: ignore[arg-type]


def test_a_link_url_stored_twice_on_postgres_is_one_line_without_the_url(pg_store) -> None:
    """PostgreSQL's unique violation carries `DETAIL: Key (url)=(…)`: the URL, a bearer
    credential, must not reach the error (issue 11 point 10)."""
    from dataclasses import replace

    from linkpool.errors import DuplicateRecord
    from linkpool.models import ListState
    from linkpool.store import NewLink

    now, expires = START, START + timedelta(days=30)
    url = "https://sim1.qualtrics.com/jfe/form/SV_x?Q_DL=secret-dl-1&Q_CHL=gl"
    link = NewLink(
        ext_ref="a#0", contact_id="CID_a0", contact_lookup_id="CGC_a0", url=url, expires_at=expires
    )
    first = pg_store.create_list(pool="dup", survey_id=SURVEY_ID, name="lp/dup/1", size=1, now=now)
    second = pg_store.create_list(pool="dup", survey_id=SURVEY_ID, name="lp/dup/2", size=1, now=now)
    for list_id in (first, second):
        pg_store.update_list(list_id, now=now, state=ListState.DISTRIBUTED, expires_at=expires)
    assert pg_store.finish_list(first, "dup", [link], now=now, shortfall=0)

    with pytest.raises(DuplicateRecord) as excinfo:
        pg_store.finish_list(second, "dup", [replace(link, ext_ref="b#0")], now=now, shortfall=0)

    message = str(excinfo.value)
    assert "secret-dl-1" not in message and "DETAIL" not in message
    assert len(message.splitlines()) == 1


def test_a_postgres_claim_is_one_statement_and_its_connection_returns_in_a_transaction_mode(
    pg_engine, postgres_url: str, monkeypatch
) -> None:
    """On PostgreSQL the claim runs alone in autocommit (one round trip). Its connection must go
    back to the pool out of autocommit, after a claim, a key conflict and an exhausted pool, so
    the store's multi-statement work on the same connection stays transactional."""
    from sqlalchemy import event

    from linkpool import IdempotencyConflict
    from linkpool.store.claims import CompiledClaim

    seed_links(Store(pg_engine), "race", 2, now=START, expires_at=START + timedelta(days=50))
    engine = create_engine(postgres_url, pool_size=1, max_overflow=0)
    during: list[bool] = []
    seen_autocommit: list[bool] = []
    execute = CompiledClaim._execute

    def spy(self, connection, values):
        during.append(connection.driver_connection.autocommit)
        return execute(self, connection, values)

    monkeypatch.setattr(CompiledClaim, "_execute", spy)

    @event.listens_for(engine, "checkin")
    def record(dbapi_connection, _record) -> None:
        seen_autocommit.append(dbapi_connection.autocommit)

    with LinkPool(engine=engine, pools=[POOL], clock=ManualClock(START)) as lp:
        first = lp.claim("race", recipient="a", key="k")
        with pytest.raises(IdempotencyConflict):
            lp.claim("race", recipient="b", key="k")
        lp.claim("race", recipient="c")
        with pytest.raises(PoolExhausted):
            lp.claim("race", recipient="d")
        with engine.connect() as connection:
            connection.exec_driver_sql("SELECT 1")
            assert connection.connection.driver_connection.autocommit is False
        assert lp.claim("race", recipient="a", key="k").link_id == first.link_id
    assert during and all(during)
    assert seen_autocommit and not any(seen_autocommit)


def test_a_postgres_connection_that_cannot_switch_autocommit_is_discarded(
    pg_engine, postgres_url: str, monkeypatch
) -> None:
    """psycopg refuses to switch autocommit on a connection inside a transaction. After the
    claim (it has committed) the claim stands; before it, the claim is a DatabaseError. Either
    way that connection is thrown away, and the next claim works."""
    from sqlalchemy import event

    from linkpool.errors import DatabaseError
    from linkpool.store.claims import CompiledClaim

    seed_links(Store(pg_engine), "race", 3, now=START, expires_at=START + timedelta(days=50))
    engine = create_engine(postgres_url, pool_size=1, max_overflow=0)
    invalidated: list[object] = []
    event.listen(engine, "invalidate", lambda *args: invalidated.append(args[2]))
    execute = CompiledClaim._execute

    def then_open_a_transaction(self, connection, values):
        row = execute(self, connection, values)
        connection.driver_connection.execute("BEGIN")
        return row

    with LinkPool(engine=engine, pools=[POOL], clock=ManualClock(START)) as lp:
        monkeypatch.setattr(CompiledClaim, "_execute", then_open_a_transaction)
        kept = lp.claim("race", recipient="committed")
        monkeypatch.setattr(CompiledClaim, "_execute", execute)
        assert len(invalidated) == 1
        assert [c.recipient for c in lp.store.iter_claims("race")] == ["committed"]

        @event.listens_for(engine, "checkout", once=True)
        def inside_a_transaction(dbapi_connection, _record, _proxy) -> None:
            dbapi_connection.execute("SELECT 1")  # not autocommit: this opens a transaction

        with pytest.raises(DatabaseError, match="check \\[database\\] url"):
            lp.claim("race", recipient="refused")
        assert len(invalidated) == 2
        after = lp.claim("race", recipient="after")
    assert after.link_id != kept.link_id


def test_the_event_loop_claim_is_the_claim_and_hands_back_what_it_cannot_answer(
    pg_engine, postgres_url: str
) -> None:
    """``AsyncClaims`` (linkpool serve's claim on PostgreSQL) claims like ``LinkPool.claim``, and
    answers None for a repeated key and an empty pool, which the thread path then answers. A
    statement that was sent and failed (its backend killed) is a DatabaseError, never resent;
    the pool then replaces its connections and claims again."""
    import asyncio

    import sqlalchemy as sa

    from linkpool.errors import DatabaseError
    from linkpool.store.async_claim import AsyncClaims

    seed_links(Store(pg_engine), "race", 3, now=START, expires_at=START + timedelta(days=50))
    with LinkPool(engine=create_engine(postgres_url), pools=[POOL], clock=ManualClock(START)) as lp:
        claims = AsyncClaims(lp.store.compiled_claim, lp.engine.url, 2)

        def request(recipient: str, key: str | None = None):
            return lp.claim_request("race", recipient=recipient, key=key, data={"n": 1})

        async def scenario():
            await claims.open()
            try:
                first = await claims.claim(request("a", "k"))
                repeat = await claims.claim(request("a", "k"))
                with pg_engine.connect() as connection:
                    connection.execute(
                        sa.text(
                            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                            " AND application_name = ''"
                        )
                    )
                with pytest.raises(DatabaseError):
                    await claims.claim(request("lost"))
                after = None
                for _ in range(50):  # the pool reconnects in the background
                    after = await claims.claim(request("after"))
                    if after is not None:
                        break
                    await asyncio.sleep(0.1)
                empty = [await claims.claim(request(f"more-{n}")) for n in range(2)]
                return first, repeat, after, empty
            finally:
                await claims.close()

        first, repeat, after, empty = asyncio.run(scenario())
        lp.engine.dispose()  # its pooled connection was killed too
        assert first is not None and repeat is None
        assert lp.claim_of(first).data == {"n": 1}
        assert lp.store.claim_by_key("race", "k").id == first.id
        assert after is not None and after.id != first.id
        assert empty[1] is None  # three links: a, after, and at most one more
        recipients = sorted(c.recipient for c in lp.store.iter_claims("race"))
        assert "lost" not in recipients and recipients[:2] == ["a", "after"]
