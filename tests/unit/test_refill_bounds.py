"""What a typo in a pool's settings may cost (issue 11 points 3 and 4): planned rows of a runaway
plan are dropped once the configuration is corrected, settings no real pool needs are refused
(the directory's ceiling on every plan is linkpool.refill.ceiling's, tested with it), and a
survey Qualtrics makes no links for is found out before any list or contact is made for it."""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import replace
from datetime import timedelta

import httpx
import pytest
import sqlalchemy as sa

from linkpool.clock import ManualClock
from linkpool.config import GcSettings, PoolSettings
from linkpool.errors import ConfigError
from linkpool.gc import collect
from linkpool.models import ListState, lists
from linkpool.qualtrics.client import QualtricsClient
from linkpool.qualtrics.endpoints import CREATE_MAILING_LIST, GET_SURVEY, START_IMPORT
from linkpool.refill import estimate_calls, refill
from linkpool.simulator import Simulator
from linkpool.store import Store
from tests.provision import provision_list
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


# --- the survey, checked before anything is made for it (issue 11 point 4) -------------------

INACTIVE = "SV_Inactive000001"
SURVEY_ANSWER = re.compile(r"/surveys/SV_[^/]+$")


class SurveyAnswer(httpx.BaseTransport):
    """The simulator, with a hook on each answer to ``GET /surveys/{surveyId}``."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.inner = sim.transport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if request.method == "GET" and SURVEY_ANSWER.search(request.url.path):
            response.read()
            return self.answered(response)
        return response

    def answered(self, response: httpx.Response) -> httpx.Response:
        return response


class SilentOnActivity(SurveyAnswer):
    """Answers a survey's metadata without ``isActive``, as Qualtrics might."""

    def answered(self, response: httpx.Response) -> httpx.Response:
        body = json.loads(response.content)
        body["result"].pop("isActive")
        return httpx.Response(response.status_code, json=body)


class DeactivatedAfterTheCheck(SurveyAnswer):
    """Answers that the survey is active, then deactivates it (someone in the Qualtrics UI)."""

    def answered(self, response: httpx.Response) -> httpx.Response:
        self.sim.set_survey_active(SURVEY, False)
        return response


def test_a_refused_survey_fails_the_pool_in_one_line_and_creates_nothing(
    sim: Simulator, client: QualtricsClient, store: Store, clock: ManualClock
) -> None:
    sim.add_survey(INACTIVE, active=False)
    pool = pool_settings(survey_id=INACTIVE)

    report = refill(make_settings(sim, pool), client, store, clock)

    (pool_report,) = report.pools
    assert report.exit_code == 1
    assert pool_report.errors == [
        f"survey {INACTIVE} is not active: Qualtrics makes no links for it; activate it in "
        "Qualtrics or fix the pool's survey_id"
    ]
    assert pool_report.api_calls == {GET_SURVEY.key: 1}
    assert (pool_report.lists_planned, pool_report.lists_failed) == (0, 0)
    assert states(store) == {}
    assert sim.mailing_lists() == {} and sim.contact_ids() == []


def test_an_unknown_survey_fails_the_pool_naming_it_and_what_qualtrics_said(
    sim: Simulator, client: QualtricsClient, store: Store, clock: ManualClock
) -> None:
    pool = pool_settings(survey_id="SV_NoSuchSurvey01")

    (error,) = refill(make_settings(sim, pool), client, store, clock).pools[0].errors

    assert error.startswith(
        "survey SV_NoSuchSurvey01 was not found: Qualtrics makes no links for it; fix the "
        "pool's survey_id (or the datacenter)"
    )
    assert "Survey not found" in error and "[requestId " in error
    assert states(store) == {}
    assert sim.mailing_lists() == {} and sim.contact_ids() == []


def test_a_refused_survey_leaves_ready_and_planned_lists_alone(
    sim: Simulator, client: QualtricsClient, store: Store, clock: ManualClock
) -> None:
    pool = pool_settings(target_available=10, low_water=5, list_size=4)
    provision_list(client, store, clock, size=4, ttl=timedelta(days=30))  # 4 < low_water
    plan_rows(store, pool, 1, clock)  # left by a run that died before creating it
    sim.set_survey_active(SURVEY, False)
    lists_before, contacts_before = sim.mailing_lists(), sim.contact_ids()

    report = refill(make_settings(sim, pool), client, store, clock).pools[0]

    assert len(report.errors) == 1 and "is not active" in report.errors[0]
    assert report.claimable_after == 4
    assert states(store) == {"ready": 1, "planned": 1}  # the plan waits for the survey
    assert sim.mailing_lists() == lists_before
    assert sim.contact_ids() == contacts_before
    assert report.api_calls[GET_SURVEY.key] == 1
    assert report.api_calls[CREATE_MAILING_LIST.key] == report.api_calls[START_IMPORT.key] == 0


def test_a_pool_at_target_does_not_ask_about_its_survey(
    sim: Simulator, client: QualtricsClient, store: Store, clock: ManualClock
) -> None:
    settings = make_settings(sim, pool_settings())
    refill(settings, client, store, clock)
    sim.set_survey_active(SURVEY, False)  # its links keep working until they expire

    report = refill(settings, client, store, clock)

    assert report.exit_code == 0
    assert report.api_calls == {}


def test_a_run_that_creates_lists_asks_about_the_survey_once(
    sim: Simulator, client: QualtricsClient, store: Store, clock: ManualClock
) -> None:
    pool = pool_settings(target_available=12, low_water=5, list_size=4)
    plan_rows(store, pool, 1, clock)  # resumed beside two new lists: one check for all

    report = refill(make_settings(sim, pool), client, store, clock).pools[0]

    assert (report.lists_ready, report.errors) == (3, [])
    assert report.api_calls[GET_SURVEY.key] == 1
    assert estimate_calls(pool, 2)[GET_SURVEY.key] == 1  # the dry run counts it too
    assert estimate_calls(pool, 0)[GET_SURVEY.key] == 0


def test_a_survey_qualtrics_does_not_say_is_active_is_provisioned(
    sim: Simulator, store: Store, clock: ManualClock
) -> None:
    with sim.client(transport=SilentOnActivity(sim)) as client:
        report = refill(make_settings(sim, pool_settings()), client, store, clock)

    assert report.exit_code == 0
    assert report.pools[0].lists_ready == 3


def test_a_survey_deactivated_after_the_check_leaves_no_contacts_with_purge_contacts(
    sim: Simulator, store: Store, clock: ManualClock
) -> None:
    """The check narrows the window; a survey deactivated within it still refuses the
    distribution, and the abandoned lists take their placeholders with them."""
    settings = replace(make_settings(sim, pool_settings()), gc=GcSettings(purge_contacts=True))

    with sim.client(transport=DeactivatedAfterTheCheck(sim)) as client:
        report = refill(settings, client, store, clock).pools[0]

    assert report.failed and report.lists_failed == 3
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
