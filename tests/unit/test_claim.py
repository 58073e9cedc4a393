"""The claim on SQLite: which link, idempotency, validation, counts, and sharing between threads."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from linkpool import (
    Claim,
    ClaimExpired,
    ConfigError,
    IdempotencyConflict,
    LinkPool,
    LinkPoolError,
    PoolExhausted,
)
from linkpool.clock import ManualClock
from linkpool.config import PoolSettings
from linkpool.errors import DuplicateRecord, InvalidClaim, SchemaNotMigrated, UnknownPool
from linkpool.models import LinkStatus, ListState, WriteBack, links
from linkpool.pool import canonical_json
from linkpool.store import NewLink, Store
from tests.conftest import SURVEY_ID, SeedLinks

DAY = timedelta(days=1)


def pool_settings(name: str = "nps") -> PoolSettings:
    return PoolSettings(name=name, survey_id=SURVEY_ID, link_ttl=60 * DAY, min_remaining=7 * DAY)


@pytest.fixture
def lp(sqlite_url: str, clock: ManualClock) -> Iterator[LinkPool]:
    pool = LinkPool(
        database_url=sqlite_url, pools=[pool_settings("nps"), pool_settings("other")], clock=clock
    )
    yield pool
    pool.close()


@pytest.fixture
def stock(store: Store, seed: SeedLinks, clock: ManualClock):
    """Seed ``count`` links of ``pool`` expiring ``days`` from now."""

    def add(count: int, days: float, pool: str = "nps") -> list[int]:
        return seed(store, pool, count, now=clock.now(), expires_at=clock.now() + days * DAY)

    return add


def link_status(store: Store, link_id: int) -> str:
    with store.read() as connection:
        return connection.execute(sa.select(links.c.status).where(links.c.id == link_id)).scalar()


# --- which link ---------------------------------------------------------------------------


def test_claim_hands_out_the_soonest_expiring_claimable_link(
    lp: LinkPool, stock, clock: ManualClock
) -> None:
    stock(3, days=40)
    soonest = stock(2, days=10)
    stock(2, days=3)  # less than min_remaining left: never handed out

    claim = lp.claim("nps", recipient="cust-42", key="txn-981", data={"store": "12"})

    assert claim.link_id in soonest
    assert claim.expires_at == clock.now() + 10 * DAY
    assert claim.pool == "nps"
    assert claim.recipient == "cust-42"
    assert claim.key == "txn-981"
    assert claim.data == {"store": "12"}
    assert claim.claimed_at == clock.now()
    assert claim.contact_id.startswith("CID_")
    assert claim.url.startswith("https://sim1.qualtrics.com/jfe/form/")
    assert claim.replayed is False


def test_claim_marks_the_link_claimed_with_a_pending_write_back(
    lp: LinkPool, stock, store: Store
) -> None:
    stock(1, days=30)

    claim = lp.claim("nps", recipient="cust-1")

    with store.read() as connection:
        row = connection.execute(sa.select(links).where(links.c.id == claim.link_id)).mappings()
        row = row.one()
    assert row["status"] == LinkStatus.CLAIMED
    assert row["recipient"] == "cust-1"
    assert row["writeback"] == WriteBack.PENDING


def test_a_link_exactly_min_remaining_from_expiry_is_still_claimable(lp: LinkPool, stock) -> None:
    (link_id,) = stock(1, days=7)

    assert lp.claim("nps", recipient="cust-1").link_id == link_id


def test_links_with_less_than_min_remaining_are_reported_as_too_old(
    lp: LinkPool, stock, clock: ManualClock
) -> None:
    stock(3, days=6)
    stock(2, days=-1)  # already expired: neither claimable nor too old

    with pytest.raises(PoolExhausted) as excinfo:
        lp.claim("nps", recipient="cust-1")

    assert excinfo.value.pool == "nps"
    assert excinfo.value.too_old == 3
    assert "'nps'" in str(excinfo.value)
    assert "3 available link(s) have less than min_remaining left" in str(excinfo.value)


def test_an_empty_pool_is_exhausted_with_no_links_at_all(lp: LinkPool) -> None:
    with pytest.raises(PoolExhausted) as excinfo:
        lp.claim("nps", recipient="cust-1")

    assert excinfo.value.too_old == 0
    assert "no available links at all" in str(excinfo.value)
    assert excinfo.value.exit_code == 3


def test_claiming_every_link_then_one_more_is_exhausted(lp: LinkPool, stock) -> None:
    seeded = stock(3, days=30)

    claimed = [lp.claim("nps", recipient=f"cust-{n}").link_id for n in range(3)]

    assert sorted(claimed) == sorted(seeded)
    with pytest.raises(PoolExhausted):
        lp.claim("nps", recipient="cust-4")


def test_links_of_another_pool_are_never_handed_out(lp: LinkPool, stock) -> None:
    stock(5, days=30, pool="other")

    with pytest.raises(PoolExhausted):
        lp.claim("nps", recipient="cust-1")


# --- idempotency --------------------------------------------------------------------------


def test_repeating_a_key_returns_the_first_claim(lp: LinkPool, stock) -> None:
    stock(5, days=30)
    first = lp.claim("nps", recipient="cust-42", key="txn-981", data={"a": "1", "b": "2"})

    again = lp.claim("nps", recipient="cust-42", key="txn-981", data={"b": "2", "a": "1"})

    assert again.replayed is True
    assert again.link_id == first.link_id
    assert again.url == first.url
    assert again.claimed_at == first.claimed_at
    assert lp.counts("nps").claimed == 1


@pytest.mark.parametrize(
    "change",
    [
        {"recipient": "cust-43"},
        {"data": {"store": "13"}},
        {"data": None},
    ],
)
def test_a_key_reused_with_other_recipient_or_data_conflicts(
    lp: LinkPool, stock, change: dict
) -> None:
    stock(5, days=30)
    original = {"recipient": "cust-42", "data": {"store": "12"}}
    lp.claim("nps", key="txn-981", **original)
    before = lp.counts("nps")

    with pytest.raises(IdempotencyConflict) as excinfo:
        lp.claim("nps", key="txn-981", **{**original, **change})

    assert excinfo.value.key == "txn-981"
    assert excinfo.value.pool == "nps"
    assert lp.counts("nps") == before


def test_without_a_key_each_call_is_a_new_claim(lp: LinkPool, stock) -> None:
    stock(2, days=30)

    first = lp.claim("nps", recipient="cust-42", data={"store": "12"})
    second = lp.claim("nps", recipient="cust-42", data={"store": "12"})

    assert first.link_id != second.link_id
    assert lp.counts("nps").claimed == 2


def test_keys_are_per_pool(lp: LinkPool, stock) -> None:
    nps = stock(1, days=30)
    other = stock(1, days=30, pool="other")

    in_nps = lp.claim("nps", recipient="cust-1", key="same")
    in_other = lp.claim("other", recipient="cust-2", key="same")

    assert in_nps.link_id in nps
    assert in_other.link_id in other
    assert not in_other.replayed


def test_an_exhausted_pool_still_replays_an_earlier_key(lp: LinkPool, stock) -> None:
    stock(1, days=30)
    first = lp.claim("nps", recipient="cust-1", key="k1")

    again = lp.claim("nps", recipient="cust-1", key="k1")

    assert again.link_id == first.link_id
    assert again.replayed
    with pytest.raises(PoolExhausted):
        lp.claim("nps", recipient="cust-1", key="k2")


def test_a_replay_of_an_expired_claim_raises_with_the_original_claim(
    lp: LinkPool, stock, clock: ManualClock
) -> None:
    stock(1, days=30)
    first = lp.claim("nps", recipient="cust-1", key="k1")
    clock.advance(31 * DAY)

    with pytest.raises(ClaimExpired) as excinfo:
        lp.claim("nps", recipient="cust-1", key="k1")

    assert excinfo.value.claim.link_id == first.link_id
    assert excinfo.value.claim.expires_at == first.expires_at
    assert excinfo.value.claim.replayed
    assert "expired" in str(excinfo.value) and "new key" in str(excinfo.value)
    assert first.url not in str(excinfo.value)


def test_a_replay_whose_list_was_deleted_raises_claim_expired(
    lp: LinkPool, stock, store: Store, clock: ManualClock
) -> None:
    stock(1, days=30)
    first = lp.claim("nps", recipient="cust-1", key="k1")
    with store.write() as connection:
        list_id = connection.execute(
            sa.select(links.c.list_id).where(links.c.id == first.link_id)
        ).scalar_one()
    store.update_list(list_id, now=clock.now(), state=ListState.DELETED)

    with pytest.raises(ClaimExpired, match="deleted"):
        lp.claim("nps", recipient="cust-1", key="k1")


def test_a_conflicting_replay_of_an_expired_claim_is_still_a_conflict(
    lp: LinkPool, stock, clock: ManualClock
) -> None:
    stock(1, days=30)
    lp.claim("nps", recipient="cust-1", key="k1")
    clock.advance(31 * DAY)

    with pytest.raises(IdempotencyConflict):
        lp.claim("nps", recipient="cust-2", key="k1")


# --- arguments ----------------------------------------------------------------------------


def test_an_unknown_pool_lists_the_configured_pools(lp: LinkPool) -> None:
    with pytest.raises(UnknownPool) as excinfo:
        lp.claim("nope", recipient="cust-1")

    assert isinstance(excinfo.value, ConfigError)
    assert excinfo.value.configured == ["nps", "other"]
    assert "'nope'" in str(excinfo.value)
    assert "configured pools: nps, other" in str(excinfo.value)


@pytest.fixture
def checkouts(lp: LinkPool) -> Iterator[list[object]]:
    """Every connection the pool's engine hands out from now on, whatever runs on it."""
    seen: list[object] = []

    def record(dbapi_connection, _record, _proxy) -> None:
        seen.append(dbapi_connection)

    sa.event.listen(lp.engine, "checkout", record)
    yield seen
    sa.event.remove(lp.engine, "checkout", record)


@pytest.mark.parametrize(
    "arguments",
    [
        {"recipient": ""},
        {"recipient": "   "},
        {"recipient": 42},
        {"recipient": None},
        {"recipient": "x" * 256},
        {"recipient": "cust-1", "key": ""},
        {"recipient": "cust-1", "key": "k" * 256},
        {"recipient": "cust-1", "data": ["not", "a", "dict"]},
        {"recipient": "cust-1", "data": '{"store": "12"}'},
        {"recipient": "cust-1", "data": {"when": object()}},
        {"recipient": "cust-1", "data": {"ratio": float("nan")}},
        {"recipient": "cust-1", "data": {"blob": "x" * (64 * 1024)}},
    ],
)
def test_invalid_arguments_fail_before_touching_the_database(
    lp: LinkPool, stock, checkouts: list[object], arguments: dict
) -> None:
    stock(2, days=30)
    before = lp.counts("nps")
    checkouts.clear()

    with pytest.raises(InvalidClaim) as excinfo:
        lp.claim("nps", **arguments)

    assert isinstance(excinfo.value, ValueError)
    assert checkouts == []
    assert lp.counts("nps") == before


def test_data_just_under_the_limit_is_accepted(lp: LinkPool, stock) -> None:
    stock(1, days=30)
    # Values of at most 1,000 characters each (Qualtrics' embedded-data limit), 64 KiB in all.
    data = {f"k{index:02d}": "x" * 1000 for index in range(65)}
    data["k64"] = ""
    data["k64"] = "x" * (64 * 1024 - len(canonical_json(data) or ""))

    assert len(canonical_json(data) or "") == 64 * 1024
    assert lp.claim("nps", recipient="cust-1", data=data).data == data


def test_the_claim_repr_keeps_the_url_out(lp: LinkPool, stock) -> None:
    stock(1, days=30)

    claim = lp.claim("nps", recipient="cust-1")

    assert isinstance(claim, Claim)
    assert claim.url not in repr(claim)
    assert "cust-1" in repr(claim)


# --- counts -------------------------------------------------------------------------------


def test_counts(lp: LinkPool, stock, clock: ManualClock) -> None:
    stock(5, days=30)
    stock(2, days=3)
    stock(1, days=-1)
    stock(4, days=30, pool="other")
    for n in range(2):
        lp.claim("nps", recipient=f"cust-{n}")

    counts = lp.counts("nps")

    assert counts.available == 5  # 3 + 2 unclaimed and unexpired
    assert counts.claimable == 3
    assert counts.too_old == 2
    assert counts.claimed == 2
    assert counts.claimed_24h == 2
    assert counts.expired == 1
    assert len(counts.lists) == 3
    assert all(list_id.startswith("CG_") for list_id in counts.lists)

    clock.advance(timedelta(hours=25))
    later = lp.counts("nps")

    assert later.claimed == 2
    assert later.claimed_24h == 0


def test_counts_leave_out_deleted_lists(lp: LinkPool, stock, store: Store, clock) -> None:
    stock(1, days=30)
    stock(1, days=30)
    kept, gone = store.lists_in_states(["ready"], pool="nps")
    store.update_list(gone.id, now=clock.now(), state="deleted")

    assert lp.counts("nps").lists == (kept.mailing_list_id,)


def test_counts_of_an_unknown_pool(lp: LinkPool) -> None:
    with pytest.raises(UnknownPool):
        lp.counts("nope")


# --- schema -------------------------------------------------------------------------------


def test_an_unmigrated_database_asks_for_db_upgrade(tmp_path: Path, clock) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"

    with pytest.raises(SchemaNotMigrated) as excinfo:
        LinkPool(database_url=url, pools=[pool_settings()], clock=clock)

    assert "linkpool db upgrade" in str(excinfo.value)
    assert isinstance(excinfo.value, LinkPoolError)


def test_claiming_from_an_unmigrated_database_asks_for_db_upgrade(tmp_path: Path, clock) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    lp = LinkPool(database_url=url, pools=[pool_settings()], clock=clock, check_schema=False)

    with pytest.raises(SchemaNotMigrated, match="linkpool db upgrade"):
        lp.claim("nps", recipient="cust-1")
    lp.close()


def test_from_config(tmp_path: Path, sqlite_url: str) -> None:
    path = tmp_path / "linkpool.toml"
    path.write_text(
        f'[database]\nurl = "{sqlite_url}"\n[pools.nps]\nsurvey_id = "{SURVEY_ID}"\n',
        encoding="utf-8",
    )

    with LinkPool.from_config(path) as lp:
        assert list(lp.pools) == ["nps"]
        assert lp.counts("nps").claimable == 0


# --- threads ------------------------------------------------------------------------------


def test_threads_sharing_a_linkpool_get_distinct_links(lp: LinkPool, stock) -> None:
    seeded = stock(40, days=30)
    start = threading.Barrier(8)

    def claim_until_exhausted(worker: int) -> list[int]:
        start.wait()
        got = []
        while True:
            try:
                got.append(lp.claim("nps", recipient=f"worker-{worker}").link_id)
            except PoolExhausted:
                return got

    with ThreadPoolExecutor(max_workers=8) as executor:
        results = list(executor.map(claim_until_exhausted, range(8)))

    handed_out = [link_id for result in results for link_id in result]
    assert len(handed_out) == len(set(handed_out))
    assert sorted(handed_out) == sorted(seeded)


def test_threads_repeating_one_key_all_get_the_same_link(lp: LinkPool, stock) -> None:
    stock(10, days=30)
    start = threading.Barrier(8)

    def claim(_: int) -> int:
        start.wait()
        return lp.claim("nps", recipient="cust-1", key="once").link_id

    with ThreadPoolExecutor(max_workers=8) as executor:
        link_ids = set(executor.map(claim, range(8)))

    assert len(link_ids) == 1
    assert lp.counts("nps").claimed == 1


def test_database_errors_never_carry_link_urls(store: Store, clock: ManualClock) -> None:
    """A statement's parameters (personal link URLs among them) stay out of its errors."""
    row = {
        "ext_ref": "linkpool:dup#0",
        "contact_id": "CID_dup",
        "contact_lookup_id": None,
        "url": "https://sim1.qualtrics.com/jfe/form/SV_x?Q_DL=EMD_secret_CGC_dup",
        "expires_at": clock.now() + timedelta(days=30),
    }
    list_id = store.create_list(pool="p", survey_id=SURVEY_ID, name="n", size=2, now=clock.now())

    store.update_list(list_id, now=clock.now(), state=ListState.DISTRIBUTED)
    first = NewLink(**row)

    with pytest.raises(DuplicateRecord) as caught:
        store.finish_list(
            list_id,
            "p",
            [first, replace(first, ext_ref="linkpool:dup#1")],
            now=clock.now(),
            shortfall=0,
        )

    assert "EMD_secret" not in str(caught.value)


# --- input that JSON accepts but a database or a comparison cannot take (issue 11 point 9) --

DEEP = {"a": None}
for _ in range(5000):
    DEEP = {"a": DEEP}


@pytest.mark.parametrize(
    ("arguments", "said"),
    [
        ({"data": DEEP}, "nested deeper"),
        ({"data": {"n": 10**5000}}, "not JSON-serialisable"),
        ({"data": {"text": "\ud800"}}, "not valid Unicode"),
        ({"data": {"\udcff": 1}}, "not valid Unicode"),
        ({"recipient": "cust\x00-1"}, "NUL character"),
        ({"recipient": "cust-\ud800"}, "not valid Unicode"),
        ({"key": "k\x00"}, "NUL character"),
        ({"key": "k\udc80"}, "not valid Unicode"),
        ({"data": {1: "a", "b": 2}}, "not JSON-serialisable"),
        ({"data": {"when": object()}}, "not JSON-serialisable"),
    ],
    ids=[
        "deep",
        "huge-int",
        "lone-surrogate-value",
        "lone-surrogate-key",
        "nul-recipient",
        "surrogate-recipient",
        "nul-key",
        "surrogate-key",
        "mixed-keys",
        "object",
    ],
)
def test_input_that_cannot_be_stored_is_an_invalid_claim(
    lp: LinkPool, stock, store: Store, arguments: dict[str, object], said: str
) -> None:
    stock(2, days=30)
    call: dict[str, object] = {"recipient": "cust-1", "key": "k1", **arguments}

    with pytest.raises(InvalidClaim, match=said):
        lp.claim("nps", **call)  # type: ignore[arg-type]

    assert lp.counts("nps").claimed == 0


def test_nul_inside_data_is_stored_escaped_and_replays(lp: LinkPool, stock) -> None:
    stock(1, days=30)
    first = lp.claim("nps", recipient="cust-1", key="k1", data={"note": "a\x00b"})

    again = lp.claim("nps", recipient="cust-1", key="k1", data={"note": "a\x00b"})

    assert again.replayed and again.link_id == first.link_id
    assert again.data == {"note": "a\x00b"}


@pytest.mark.parametrize("pool", [["nps"], None, 7], ids=["list", "none", "int"])
def test_a_pool_name_that_is_not_text_is_an_unknown_pool(lp: LinkPool, pool: object) -> None:
    with pytest.raises(UnknownPool):
        lp.claim(pool, recipient="cust-1")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "key", [None, 7, "k\x00", "k\ud800"], ids=["none", "int", "nul", "surrogate"]
)
def test_a_lookup_by_a_key_that_is_not_storable_text_is_an_invalid_claim(
    lp: LinkPool, key: object
) -> None:
    with pytest.raises(InvalidClaim):
        lp.claim_by_key("nps", key)  # type: ignore[arg-type]
