"""The store speaks linkpool's types: frozen records, StrEnum states, linkpool's own errors."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest
import sqlalchemy as sa

from linkpool import Claimer, LinkPool, PoolSettings
from linkpool.clock import ManualClock
from linkpool.errors import ConfigError
from linkpool.models import ListState
from linkpool.store import ClaimRequest, ListRecord, Store
from linkpool.store.claims import statement_constants
from tests.conftest import SURVEY_ID, SeedLinks

POOL = PoolSettings(name="nps", survey_id=SURVEY_ID, target_available=10, low_water=5, list_size=5)


def test_lists_come_back_as_frozen_records_with_enum_states(
    store: Store, seed: SeedLinks, clock: ManualClock
) -> None:
    seed(store, "nps", 2, now=clock.now(), expires_at=clock.now() + timedelta(days=30))

    (record,) = store.lists_in_states([ListState.READY], pool="nps")

    assert isinstance(record, ListRecord)
    assert record.state is ListState.READY and record.links_stored == 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.state = ListState.FAILED  # type: ignore[misc]


def test_the_claim_statement_carries_its_literals_as_public_compiled_params(
    store: Store,
) -> None:
    """The driver-level claim relies on ``Compiled.params`` giving the statement's own values
    and None for those it adds per run, under the names its bind positions use: an upgrade
    that changes this fails here, loudly, not as a wrong claim."""
    compiled = store._claim_statement.compile(dialect=store.engine.dialect)

    constants = statement_constants(compiled)

    per_run = {"p_pool", "p_cutoff", "p_recipient", "p_key", "p_data", "p_now", "p_writeback"}
    assert {name for name, value in constants.items() if value is None} == per_run
    assert constants["status"] == "claimed" and "writeback" not in constants  # per pool
    assert set(compiled.positiontup or ()) == set(constants)


def test_a_claim_from_an_empty_pool_is_none(store: Store, clock: ManualClock) -> None:
    request = ClaimRequest("nps", "r", None, None, clock.now(), clock.now())

    assert store.claim(request) is None


def test_linkpool_is_a_claimer_built_on_an_engine_alone(
    engine: sa.engine.Engine, store: Store, seed: SeedLinks, clock: ManualClock
) -> None:
    seed(store, "nps", 1, now=clock.now(), expires_at=clock.now() + timedelta(days=30))
    lp = LinkPool(engine=engine, pools=[POOL], clock=clock)

    claim = lp.claim("nps", recipient="r-1", key="k-1")

    assert isinstance(lp, Claimer)
    assert lp.claim_by_key("nps", "k-1") == dataclasses.replace(claim, replayed=True)
    assert lp.claim_by_key("nps", "unused") is None


def test_linkpool_needs_a_database_url_or_an_engine() -> None:
    with pytest.raises(ConfigError):
        LinkPool(pools=[POOL])
