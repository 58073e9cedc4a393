"""What a typo in a pool's settings may cost (issue 11 point 3): planned rows of a runaway plan
are dropped once the configuration is corrected, and settings no real pool needs are refused
(the directory's ceiling on every plan is linkpool.refill.ceiling's, tested with it)."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import timedelta

import pytest
import sqlalchemy as sa

from linkpool.clock import ManualClock
from linkpool.config import GcSettings, PoolSettings
from linkpool.errors import ConfigError
from linkpool.gc import collect
from linkpool.models import ListState, lists
from linkpool.qualtrics.client import QualtricsClient
from linkpool.refill import refill
from linkpool.simulator import Simulator
from linkpool.store import Store
from tests.unit.test_refill import SURVEY, client, make_settings, pool_settings, sim

__all__ = ["client", "sim"]  # the fixtures of test_refill, used here too


def plan_rows(store: Store, pool: PoolSettings, count: int, clock: ManualClock, **row) -> None:
    """``count`` planned rows, as a runaway refill leaves them (nothing made on Qualtrics)."""
    with store.write() as connection:
        connection.execute(
            sa.insert(lists),
            [
                {
                    "pool": pool.name,
                    "survey_id": row.get("survey_id", pool.survey_id),
                    "name": f"linkpool/{pool.name}/{uuid.uuid4()}",
                    "state": ListState.PLANNED,
                    "size": row.get("size", pool.list_size),
                    "created_at": clock.now(),
                    "updated_at": clock.now(),
                }
                for _ in range(count)
            ],
        )


def states(store: Store) -> dict[str, int]:
    with store.read() as connection:
        query = sa.select(lists.c.state, sa.func.count()).group_by(lists.c.state)
        return {state: count for state, count in connection.execute(query)}


def test_planned_rows_beyond_what_the_corrected_config_needs_are_dropped_not_provisioned(
    sim: Simulator, client: QualtricsClient, store: Store, clock: ManualClock
) -> None:
    pool = pool_settings(target_available=8, low_water=4, list_size=4)
    plan_rows(store, pool, 500, clock)  # left by a run with a target of 2,000

    report = refill(make_settings(sim, pool), client, store, clock)

    assert report.pools[0].lists_ready == 2  # what a target of 8 in lists of 4 needs
    assert len(sim.mailing_lists()) == 2
    assert states(store) == {"ready": 2, "failed": 498}
    with store.read() as connection:
        errors = set(
            connection.execute(
                sa.select(lists.c.last_error).where(lists.c.state == ListState.FAILED)
            ).scalars()
        )
    assert len(errors) == 1 and "no longer needed" in next(iter(errors))


def test_planned_rows_of_another_survey_or_list_size_are_dropped(
    sim: Simulator, client: QualtricsClient, store: Store, clock: ManualClock
) -> None:
    pool = pool_settings(target_available=8, low_water=4, list_size=4)
    plan_rows(store, pool, 1, clock, size=1)
    plan_rows(store, pool, 1, clock, survey_id="SV_OtherSurvey0001")

    refill(make_settings(sim, pool), client, store, clock)

    with store.read() as connection:
        ready = connection.execute(
            sa.select(lists.c.size, lists.c.survey_id).where(lists.c.state == ListState.READY)
        ).all()
    assert ready == [(4, SURVEY), (4, SURVEY)]
    assert states(store)["failed"] == 2


def test_a_pool_that_needs_more_lists_than_a_directory_holds_is_refused() -> None:
    with pytest.raises(ConfigError, match="10,000"):
        PoolSettings(
            name="typo",
            survey_id=SURVEY,
            target_available=1_000_000,
            low_water=10,
            list_size=1,
            link_ttl=timedelta(days=30),
            min_remaining=timedelta(days=1),
        )


def test_a_refused_survey_leaves_no_placeholder_contacts_with_purge_contacts(
    sim: Simulator, client: QualtricsClient, store: Store, clock: ManualClock
) -> None:
    """Issue 11 point 4: each refill imported list_size contacts, the distribution was then
    refused, and the contacts stayed in the directory for good."""
    sim.add_survey("SV_Inactive000001", active=False)
    pool = pool_settings(survey_id="SV_Inactive000001")
    settings = replace(make_settings(sim, pool), gc=GcSettings(purge_contacts=True))

    for _ in range(3):
        report = refill(settings, client, store, clock).pools[0]
        assert report.failed

    assert sim.mailing_lists() == {}
    assert sim.contact_ids() == []


def test_gc_purges_the_contacts_of_an_abandoned_list_it_deletes(
    sim: Simulator, client: QualtricsClient, store: Store, clock: ManualClock
) -> None:
    """A list abandoned before its links were stored: its contacts are known only to Qualtrics."""
    pool = pool_settings()
    mailing_list_id = client.create_mailing_list("linkpool/nps/abandoned")
    job = client.start_import(mailing_list_id, [{"extRef": f"slot-{n}"} for n in range(4)])
    client.wait_for_import(mailing_list_id, job.id)
    list_id = store.create_list(
        pool="nps", survey_id=SURVEY, name="linkpool/nps/abandoned", size=4, now=clock.now()
    )
    store.update_list(
        list_id,
        now=clock.now(),
        state=ListState.FAILED,
        mailing_list_id=mailing_list_id,
        last_error="refused",
    )
    assert len(sim.contact_ids()) == 4
    settings = replace(make_settings(sim, pool), gc=GcSettings(purge_contacts=True))

    report = collect(settings, client, store, clock)

    assert report.contacts_purged == 4
    assert sim.contact_ids() == []
    assert sim.mailing_lists() == {}
