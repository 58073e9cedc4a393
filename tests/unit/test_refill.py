"""Refill against the simulator in-process, on SQLite: stock, resumption after a crash at every
step, lost answers, rate limits and 5xx, lagging links, concurrency and dry runs."""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result

from linkpool.cli import App, main
from linkpool.clock import ManualClock
from linkpool.config import PoolSettings, QualtricsSettings, RefillSettings, Settings
from linkpool.errors import OutcomeUnknown, RateLimited
from linkpool.lease import DEFAULT_TTL, Lease
from linkpool.models import LinkStatus, ListState, leases, links, lists
from linkpool.qualtrics.client import QualtricsClient
from linkpool.refill import (
    MAX_IMPORT_CONTACTS,
    RefillReport,
    estimate_calls,
    import_batches,
    lists_needed,
    placeholder_contacts,
    refill,
    slot_key,
)
from linkpool.simulator import Simulator
from linkpool.store import Store
from tests.provision import provision_list

SURVEY = "SV_SimSurvey0001"
OTHER_SURVEY = "SV_SimSurvey0002"
CREATE_LIST = "POST /directories/{directoryId}/mailinglists"
FIND_LISTS = "GET /directories/{directoryId}/mailinglists"
DISTRIBUTE = "POST /distributions"
FIND_DISTRIBUTIONS = "GET /distributions"
LINKS = "GET /distributions/{distributionId}/links"
SURVEY_CHECK = "GET /surveys/{surveyId}"


class Killed(Exception):
    """Stands for the process dying at this point."""


def pool_settings(name: str = "nps", **overrides: Any) -> PoolSettings:
    values: dict[str, Any] = dict(
        name=name,
        survey_id=SURVEY,
        target_available=10,
        low_water=5,
        list_size=4,
        link_ttl=timedelta(days=30),
        min_remaining=timedelta(days=1),
        embedded_data={"channel": "kiosk"},
    )
    values.update(overrides)
    return PoolSettings(**values)


def make_settings(sim: Simulator, *pools: PoolSettings, **qualtrics_values: Any) -> Settings:
    qualtrics = QualtricsSettings(
        base_url=sim.base_url, directory_id=sim.directory_id, **qualtrics_values
    )
    pools = pools or (pool_settings(),)
    return Settings(qualtrics=qualtrics, pools={pool.name: pool for pool in pools})


@pytest.fixture
def sim(clock: ManualClock) -> Simulator:
    return Simulator(clock=clock, surveys=(SURVEY, OTHER_SURVEY), links_page_size=3)


@pytest.fixture
def client(sim: Simulator) -> Iterator[QualtricsClient]:
    with sim.client() as client:
        yield client


@pytest.fixture
def run(
    sim: Simulator, client: QualtricsClient, store: Store, clock: ManualClock
) -> Callable[..., RefillReport]:
    def run_refill(*pools: PoolSettings, **kwargs: Any) -> RefillReport:
        return refill(make_settings(sim, *pools), client, store, clock, **kwargs)

    return run_refill


def list_rows(store: Store) -> list[dict[str, Any]]:
    with store.read() as connection:
        return [dict(row) for row in connection.execute(sa.select(lists)).mappings()]


def link_rows(store: Store) -> list[dict[str, Any]]:
    with store.read() as connection:
        return [dict(row) for row in connection.execute(sa.select(links)).mappings()]


def assert_consistent(sim: Simulator, store: Store) -> None:
    """No live list on Qualtrics unknown to the database, and every stored link opens."""
    rows = list_rows(store)
    ready = {row["mailing_list_id"] for row in rows if row["state"] == ListState.READY}
    assert set(sim.mailing_lists()) == ready
    assert not [row for row in rows if row["state"] in ListState.PROVISIONING]
    distributions = {row["distribution_id"] for row in rows if row["state"] == ListState.READY}
    assert set(sim.distributions()) == distributions
    stored = link_rows(store)
    assert stored
    assert all(sim.open_link(row["url"]).ok for row in stored)


def claimable(store: Store, clock: ManualClock, pool: PoolSettings | None = None) -> int:
    pool = pool or pool_settings()
    return store.counts(pool.name, clock.now(), pool.min_remaining).claimable


# --- the rules -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("claimable_now", "expected"),
    [(0, 3), (4, 2), (5, 0), (9, 0), (10, 0)],
)
def test_low_water_rule(claimable_now: int, expected: int) -> None:
    assert lists_needed(pool_settings(), claimable_now) == expected


def test_placeholders_have_unique_slot_keys_and_the_pools_embedded_data() -> None:
    contacts = placeholder_contacts("linkpool/nps/abc", 3, {"channel": "kiosk"})
    assert [c["extRef"] for c in contacts] == [slot_key("linkpool/nps/abc", n) for n in range(3)]
    assert all(c["embeddedData"] == {"channel": "kiosk"} for c in contacts)
    assert "embeddedData" not in placeholder_contacts("linkpool/nps/abc", 1, {})[0]


def test_import_batches_respect_the_count_and_size_limits() -> None:
    contacts = placeholder_contacts("linkpool/nps/abc", 25, {"note": "x" * 100})
    assert len(import_batches(contacts)) == 1
    by_count = import_batches(contacts, max_contacts=10)
    assert [len(batch) for batch in by_count] == [10, 10, 5]
    by_size = import_batches(contacts, max_bytes=1_000)
    assert sum(len(batch) for batch in by_size) == 25
    assert all(len(batch) <= 7 for batch in by_size)
    assert len(import_batches(placeholder_contacts("x/y/z", MAX_IMPORT_CONTACTS + 1, {}))) == 2


# --- stocking --------------------------------------------------------------------------------


def test_fresh_refill_reaches_target_with_the_expected_lists(
    run: Callable[..., RefillReport], sim: Simulator, store: Store, clock: ManualClock
) -> None:
    started = clock.now()
    report = run()

    pool = report.pools[0]
    assert report.exit_code == 0
    assert (pool.claimable_before, pool.claimable_after) == (0, 12)
    assert (pool.lists_planned, pool.lists_created, pool.lists_ready) == (3, 3, 3)
    assert (pool.links_added, pool.shortfall, pool.errors) == (12, 0, [])
    assert pool.api_calls[SURVEY_CHECK] == 1  # before the first list, not per list
    assert pool.api_calls[CREATE_LIST] == 3
    assert pool.api_calls[DISTRIBUTE] == 3
    assert pool.api_calls[LINKS] == 6  # 4 links a list, 3 a page
    assert_consistent(sim, store)
    rows = {row["id"]: row for row in list_rows(store)}
    assert {d["description"] for d in sim.distributions().values()} == {
        row["name"] for row in rows.values()
    }
    ttl = timedelta(days=30)
    for link in link_rows(store):
        assert link["expires_at"] == rows[link["list_id"]]["expires_at"]
        assert started + ttl <= link["expires_at"] <= clock.now() + ttl
    contact = sim.contact(link_rows(store)[0]["contact_id"])
    assert contact["embeddedData"] == {"channel": "kiosk"}


def test_second_refill_does_nothing(
    run: Callable[..., RefillReport], sim: Simulator, store: Store
) -> None:
    run()
    calls_before = sum(sim.calls.values())

    report = run()

    assert report.pools[0].lists_planned == 0
    assert report.api_calls == {}
    assert sum(sim.calls.values()) == calls_before
    assert len(list_rows(store)) == 3


@pytest.mark.parametrize(
    ("qualtrics_values", "pattern"),
    [
        ({}, r"linkpool/nps/[0-9a-f]{32}"),
        ({"list_prefix": "linkpool-staging.eu_1"}, r"linkpool-staging\.eu_1/nps/[0-9a-f]{32}"),
    ],
)
def test_lists_are_named_with_the_list_prefix_the_pool_and_a_random_part(
    qualtrics_values: dict[str, str],
    pattern: str,
    sim: Simulator,
    client: QualtricsClient,
    store: Store,
    clock: ManualClock,
) -> None:
    report = refill(make_settings(sim, **qualtrics_values), client, store, clock)

    assert report.exit_code == 0
    names = [row["name"] for row in list_rows(store)]
    assert len(names) == 3 and all(re.fullmatch(pattern, name) for name in names), names
    assert sorted(ml["name"] for ml in sim.mailing_lists().values()) == sorted(names)
    assert sorted(d["description"] for d in sim.distributions().values()) == sorted(names)


def test_refill_tops_up_only_below_low_water(
    run: Callable[..., RefillReport], store: Store, clock: ManualClock
) -> None:
    run()
    with store.write() as connection:
        ids = connection.execute(sa.select(links.c.id).order_by(links.c.id)).scalars().all()
        connection.execute(
            sa.update(links).where(links.c.id.in_(ids[:7])).values(status=LinkStatus.CLAIMED)
        )
    assert run().pools[0].lists_planned == 0  # 5 claimable: not below low_water

    with store.write() as connection:
        connection.execute(
            sa.update(links).where(links.c.id == ids[7]).values(status=LinkStatus.CLAIMED)
        )
    report = run()  # 4 claimable: top up to 10 with ceil(6 / 4) lists

    assert report.pools[0].lists_planned == 2
    assert claimable(store, clock) == 12


def test_links_too_close_to_expiry_do_not_count(
    run: Callable[..., RefillReport], store: Store, clock: ManualClock
) -> None:
    run()
    clock.advance(timedelta(days=29, hours=1))  # 23 h left, min_remaining is 1 day

    report = run()

    assert report.pools[0].claimable_before == 0
    assert report.pools[0].lists_ready == 3


def test_pools_refill_concurrently_and_one_failure_does_not_stop_the_others(
    run: Callable[..., RefillReport], sim: Simulator, store: Store, clock: ManualClock
) -> None:
    sim.set_survey_active(OTHER_SURVEY, False)
    good = pool_settings("good")
    bad = pool_settings("bad", survey_id=OTHER_SURVEY)

    report = run(good, bad)

    by_name = {pool.pool: pool for pool in report.pools}
    assert report.exit_code == 1
    assert by_name["good"].lists_ready == 3 and not by_name["good"].errors
    assert by_name["good"].api_calls[CREATE_LIST] == 3
    assert len(by_name["bad"].errors) == 1 and by_name["bad"].links_added == 0
    assert by_name["bad"].api_calls == {SURVEY_CHECK: 1}  # refused before any list was made
    assert {row["pool"] for row in list_rows(store)} == {"good"}
    assert {ml["name"] for ml in sim.mailing_lists().values()} == {
        row["name"] for row in list_rows(store) if row["pool"] == "good"
    }


def test_a_second_refill_of_the_same_pool_reports_already_running(
    run: Callable[..., RefillReport], store: Store, clock: ManualClock
) -> None:
    other = Lease(store, "refill:nps", clock, holder="web-1:4242:ab12")
    assert other.acquire()
    other.start_heartbeat()  # alive: it renews while the second refill watches

    report = run()

    assert report.exit_code == 0
    assert report.pools[0].skipped == (
        "already running, held by host web-1, pid 4242, since 2026-11-22 09:00:00 UTC, "
        "renewed until 09:00:40 UTC"
    )
    assert report.api_calls == {}
    assert list_rows(store) == []
    assert other.current_holder() == other.holder


def test_a_refill_takes_over_from_a_dead_holder_once_its_lease_lapses(
    run: Callable[..., RefillReport], store: Store, clock: ManualClock
) -> None:
    dead = Lease(store, "refill:nps", clock)
    assert dead.acquire()  # and never renews: its process was killed
    died_at = clock.now()

    report = run()

    assert report.exit_code == 0 and report.pools[0].skipped is None
    assert report.pools[0].lists_ready == 3
    first_planned = min(row["created_at"] for row in list_rows(store))
    assert died_at + DEFAULT_TTL < first_planned <= died_at + DEFAULT_TTL + timedelta(seconds=2)


def test_a_lease_left_by_an_older_linkpool_is_in_doubt_exit_1(
    run: Callable[..., RefillReport], store: Store, clock: ManualClock
) -> None:
    store.acquire_lease("refill:nps", "old:77:cafe", now=clock.now(), ttl=timedelta(minutes=15))

    report = run()

    assert report.exit_code == 1
    assert report.pools[0].errors == [
        "refill:nps: held by host old, pid 77, since 2026-11-22 09:00:00 UTC, renewed until "
        "09:15:00 UTC, further ahead than a 30s lease runs (a holder from an older linkpool, "
        "or a clock ahead on its host); it is taken over after 2026-11-22 09:15:00 UTC"
    ]
    assert list_rows(store) == []


def test_a_refill_whose_lease_was_taken_over_writes_and_calls_nothing_more(
    run: Callable[..., RefillReport],
    sim: Simulator,
    client: QualtricsClient,
    store: Store,
    clock: ManualClock,
) -> None:
    """A rival takes the lease over right after the first mailing list is created (as after a
    freeze on a host whose clock runs behind): that list's next write is refused by the fence,
    and no further call reaches Qualtrics."""
    real_create = client.create_mailing_list
    calls_at_takeover: Counter[str] = Counter()

    def create_then_lose_the_lease(name: str) -> str:
        created = real_create(name)
        with store.write() as connection:
            connection.execute(sa.update(leases).values(holder="rival:1:ffff"))
        calls_at_takeover.update(sim.calls)
        return created

    client.create_mailing_list = create_then_lose_the_lease  # type: ignore[method-assign]

    report = run(pool_settings(target_available=4, low_water=4))

    assert report.exit_code == 1
    assert report.pools[0].errors == [
        "lease 'refill:nps' was taken over by rival:1:ffff; this run stopped without writing"
    ]
    assert [row["state"] for row in list_rows(store)] == [ListState.CREATING]  # as it was
    assert Counter(sim.calls) == calls_at_takeover  # not one call after the takeover
    assert store.lease_record("refill:nps").holder == "rival:1:ffff"  # type: ignore[union-attr]


def test_dry_run_touches_nothing(
    sim: Simulator, store: Store, clock: ManualClock, run: Callable[..., RefillReport]
) -> None:
    report = refill(make_settings(sim), None, store, clock, dry_run=True)

    pool = report.pools[0]
    assert report.dry_run and report.exit_code == 0
    assert (pool.lists_planned, pool.links_planned) == (3, 12)
    assert pool.api_calls == estimate_calls(pool_settings(), 3)
    assert pool.api_calls[CREATE_LIST] == 3
    assert sum(sim.calls.values()) == 0
    assert list_rows(store) == []


def test_progress_reaches_what_was_planned(run: Callable[..., RefillReport]) -> None:
    seen: list[tuple[int, int]] = []

    run(progress=lambda done, planned: seen.append((done, planned)))

    assert seen[-1] == (12, 12)
    assert all(done <= planned for done, planned in seen)


def test_report_as_json_names_every_figure(run: Callable[..., RefillReport]) -> None:
    report = run().to_dict()

    figures = report["pools"]["nps"]
    assert figures["links_added"] == 12
    assert figures["api_calls"][CREATE_LIST] == 3
    assert {"claimable_before", "claimable_after", "lists_created", "shortfall"} <= set(figures)
    assert {"duration_s", "errors"} <= set(figures)
    assert report["exit_code"] == 0


# --- crashes and lost answers ----------------------------------------------------------------


def kill_once(target: Any, method: str, *, after: bool = True) -> None:
    """Make ``target.method`` raise Killed once: after doing its work, or before."""
    real = getattr(target, method)

    def killer(*args: Any, **kwargs: Any) -> Any:
        delattr(target, method)  # back to the real method for the next call
        if after:
            result = real(*args, **kwargs)
            if isinstance(result, Iterator):
                next(result)
        raise Killed(f"killed in {method}")

    setattr(target, method, killer)


CRASH_POINTS = [
    pytest.param("client", "create_mailing_list", False, id="before-create-list"),
    pytest.param("client", "create_mailing_list", True, id="after-create-list"),
    pytest.param("client", "start_import", True, id="after-start-import"),
    pytest.param("client", "wait_for_import", False, id="while-importing"),
    pytest.param("client", "create_link_distribution", True, id="after-distribute"),
    pytest.param("client", "iter_links", True, id="while-reading-links"),
    pytest.param("store", "finish_list", False, id="before-storing-links"),
    pytest.param("store", "advance_list", False, id="recording-a-step"),
]


@pytest.mark.parametrize(("where", "method", "after"), CRASH_POINTS)
def test_a_killed_refill_is_resumed_or_cleaned_up_by_the_next(
    where: str,
    method: str,
    after: bool,
    run: Callable[..., RefillReport],
    sim: Simulator,
    client: QualtricsClient,
    store: Store,
    clock: ManualClock,
) -> None:
    kill_once(client if where == "client" else store, method, after=after)

    first = run(pool_settings(target_available=4, low_water=4))
    assert first.exit_code == 1
    assert "Killed" in first.pools[0].errors[0]

    second = run(pool_settings(target_available=4, low_water=4))

    assert second.exit_code == 0, second.pools[0].errors
    assert second.pools[0].lists_resumed == 1
    assert claimable(store, clock) >= 4
    assert_consistent(sim, store)


def test_an_import_refused_for_rate_limit_is_retried_next_run_not_abandoned(
    run: Callable[..., RefillReport],
    sim: Simulator,
    client: QualtricsClient,
    store: Store,
    clock: ManualClock,
) -> None:
    real_start_import = client.start_import

    def refused(*args: Any, **kwargs: Any) -> Any:
        del client.start_import
        raise RateLimited("rate limited", status_code=429)

    client.start_import = refused  # type: ignore[method-assign]
    pool = pool_settings(target_available=4, low_water=4)

    first = run(pool)
    assert first.exit_code == 1
    assert [row["state"] for row in list_rows(store)] == [ListState.LIST_CREATED]

    second = run(pool)

    assert client.start_import == real_start_import
    assert second.exit_code == 0, second.pools[0].errors
    assert second.pools[0].lists_resumed == 1
    assert [row["state"] for row in list_rows(store)] == [ListState.READY]
    assert_consistent(sim, store)


def test_a_rate_limit_midway_through_a_split_import_does_not_import_afresh(
    run: Callable[..., RefillReport],
    sim: Simulator,
    client: QualtricsClient,
    store: Store,
    clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Once one part of an import went in, a 429 on the next part must not send the list
    back to ``list_created`` (the next run would import every contact again on top)."""
    monkeypatch.setattr(
        "linkpool.refill.machine.import_batches", lambda contacts: [contacts[:2], contacts[2:]]
    )
    real_start_import = client.start_import
    started: list[int] = []

    def second_part_refused(mailing_list_id: str, contacts: list[dict[str, Any]]) -> Any:
        started.append(len(contacts))
        if len(started) == 2:
            raise RateLimited("rate limited", status_code=429)
        return real_start_import(mailing_list_id, contacts)

    monkeypatch.setattr(client, "start_import", second_part_refused)
    pool = pool_settings(target_available=4, low_water=4)

    first = run(pool)

    assert first.exit_code == 1
    [row] = list_rows(store)
    assert row["state"] == ListState.IMPORTING
    assert row["import_id"] is not None

    second = run(pool)

    assert second.exit_code == 0, second.pools[0].errors
    assert second.pools[0].lists_failed == 1  # an interrupted split import is abandoned
    assert_consistent(sim, store)


def refill_until_stocked(
    run: Callable[..., RefillReport], store: Store, clock: ManualClock, runs: int = 5
) -> list[RefillReport]:
    reports = []
    while len(reports) < runs and claimable(store, clock) < pool_settings().low_water:
        reports.append(run())
    return reports


def test_lost_answers_are_settled_by_lookup_never_by_posting_again(
    run: Callable[..., RefillReport],
    sim: Simulator,
    client: QualtricsClient,
    store: Store,
    clock: ManualClock,
) -> None:
    sim.faults.lost_response_rate = 0.4

    refill_until_stocked(run, store, clock)
    sim.faults.lost_response_rate = 0.0
    run()

    assert claimable(store, clock) >= pool_settings().low_water
    assert client.calls[FIND_LISTS] + client.calls[FIND_DISTRIBUTIONS] > 0
    every_list_ever = {**sim.mailing_lists(), **sim.deleted_mailing_lists()}
    known = {row["mailing_list_id"] for row in list_rows(store) if row["mailing_list_id"]}
    assert set(every_list_ever) == known
    names = [ml["name"] for ml in every_list_ever.values()]
    assert len(names) == len(set(names))
    assert_consistent(sim, store)


def test_a_triggered_refill_reaches_target_in_one_run_despite_lost_answers(
    run: Callable[..., RefillReport], sim: Simulator, store: Store, clock: ManualClock
) -> None:
    sim.faults.lost_response_rate = 0.4

    report = run()

    pool = report.pools[0]
    assert report.exit_code == 0, pool.errors
    assert claimable(store, clock) >= pool_settings().target_available
    assert pool.shortfall == 0
    assert pool.lists_failed == 0  # every lost answer was settled: by name, count or description
    sim.faults.lost_response_rate = 0.0
    assert_consistent(sim, store)


def lose_import_answers(client: QualtricsClient, *, took_effect: bool) -> list[str]:
    """Every import POST answers nothing; it went in only if ``took_effect``."""
    real = client.start_import
    lost: list[str] = []

    def start_import(mailing_list_id: str, contacts: list[dict[str, Any]]) -> Any:
        lost.append(mailing_list_id)
        if took_effect:
            real(mailing_list_id, contacts)
        raise OutcomeUnknown("no answer", method="POST", endpoint="transactioncontacts")

    client.start_import = start_import  # type: ignore[method-assign]
    return lost


def test_a_lost_import_answer_is_settled_by_the_lists_contact_count(
    run: Callable[..., RefillReport],
    sim: Simulator,
    client: QualtricsClient,
    store: Store,
    clock: ManualClock,
) -> None:
    lost = lose_import_answers(client, took_effect=True)

    report = run()

    pool = report.pools[0]
    assert report.exit_code == 0, pool.errors
    assert len(lost) == pool.lists_ready == lists_needed(pool_settings(), 0)  # no re-import
    assert pool.lists_failed == 0
    assert client.calls["GET /directories/{directoryId}/mailinglists/{mailingListId}"] > 0
    assert claimable(store, clock) >= pool_settings().target_available
    assert_consistent(sim, store)


def test_an_import_that_never_went_in_costs_only_its_list_which_is_replaced(
    sim: Simulator, client: QualtricsClient, store: Store, clock: ManualClock
) -> None:
    real = client.start_import
    lose_import_answers(client, took_effect=False)
    first = True

    def once(mailing_list_id: str, contacts: list[dict[str, Any]]) -> Any:
        nonlocal first
        if first:
            first = False
            raise OutcomeUnknown("no answer", method="POST", endpoint="transactioncontacts")
        return real(mailing_list_id, contacts)

    client.start_import = once  # type: ignore[method-assign]

    report = refill(make_settings(sim), client, store, clock)

    pool = report.pools[0]
    assert report.exit_code == 0, pool.errors
    assert pool.lists_failed == 1
    assert "holds 0 of 4 contacts" in next(
        row["last_error"] for row in list_rows(store) if row["state"] == ListState.FAILED
    )
    assert claimable(store, clock) >= pool_settings().target_available
    assert pool.shortfall == 0
    assert_consistent(sim, store)


def test_a_pool_left_below_low_water_by_the_runs_bound_exits_1_saying_why(
    sim: Simulator, client: QualtricsClient, store: Store, clock: ManualClock
) -> None:
    settings = replace(make_settings(sim), refill=RefillSettings(max_lists_per_run=1))

    report = refill(settings, client, store, clock)

    pool = report.pools[0]
    assert report.exit_code == 1
    assert pool.lists_planned == pool.lists_ready == 1
    assert pool.shortfall == pool_settings().target_available - claimable(store, clock) == 6
    assert pool.errors == [
        "still below low_water (4 < 5) after this run: [refill] max_lists_per_run (1) reached, "
        "0 list(s) abandoned; the next run carries on"
    ]
    second = refill(settings, client, store, clock)
    assert second.exit_code == 0 and claimable(store, clock) == 8  # the next run carries on


def test_the_call_bound_stops_new_lists_not_lists_under_way(
    sim: Simulator, client: QualtricsClient, store: Store, clock: ManualClock
) -> None:
    settings = replace(make_settings(sim), refill=RefillSettings(max_calls_per_run=10))
    lose_import_answers(client, took_effect=False)  # every list of the first round is lost

    report = refill(settings, client, store, clock)

    pool = report.pools[0]
    first_round = lists_needed(pool_settings(), 0)
    assert (pool.lists_planned, pool.lists_failed) == (first_round, first_round)  # no 2nd round
    assert sum(pool.api_calls.values()) > 10
    assert report.exit_code == 1
    assert pool.errors == [
        "still below low_water (0 < 5) after this run: [refill] max_calls_per_run (10) reached, "
        f"{first_round} list(s) abandoned; the next run carries on"
    ]
    assert not sim.mailing_lists()  # the abandoned lists were deleted


def test_rate_limit_storms_and_server_errors_are_absorbed(
    sim: Simulator, store: Store, clock: ManualClock
) -> None:
    statuses: Counter[int] = Counter()

    def counting_app(environ: dict[str, Any], start_response: Any) -> Any:
        def record(status: str, headers: Any, exc_info: Any = None) -> Any:
            statuses[int(status.split()[0])] += 1
            return start_response(status, headers, exc_info)

        return sim(environ, record)

    sim.faults.rate_limit_per_minute = 5
    sim.faults.error_rate = 0.2
    pool = pool_settings(list_size=12)
    transport = httpx.WSGITransport(app=counting_app)
    with sim.client(transport=transport) as client:
        reports = [refill(make_settings(sim, pool), client, store, clock)]
        while claimable(store, clock, pool) < pool.low_water and len(reports) < 5:
            reports.append(refill(make_settings(sim, pool), client, store, clock))

    assert statuses[429] > 0 and statuses[500] + statuses[503] > 0
    assert all(report.exit_code == 0 for report in reports), [r.pools[0].errors for r in reports]
    assert claimable(store, clock, pool) == 12
    sim.faults.rate_limit_per_minute = None
    sim.faults.error_rate = 0.0
    assert_consistent(sim, store)


def test_a_lagging_links_listing_is_read_again_until_complete(
    run: Callable[..., RefillReport], sim: Simulator, store: Store
) -> None:
    sim.faults.link_lag = timedelta(minutes=2)
    sim.faults.link_lag_fraction = 0.5

    report = run()

    pool = report.pools[0]
    assert (pool.links_added, pool.shortfall) == (12, 0)
    assert pool.api_calls[LINKS] > 6
    assert_consistent(sim, store)


def test_links_still_missing_after_the_wait_are_recorded_and_replaced(
    run: Callable[..., RefillReport], sim: Simulator, store: Store, clock: ManualClock
) -> None:
    sim.faults.link_lag = timedelta(hours=1)
    sim.faults.link_lag_fraction = 0.5

    report = run(links_wait=timedelta(seconds=20))

    pool = report.pools[0]
    assert report.exit_code == 0
    assert 0 < pool.links_added < pool.links_planned
    assert pool.links_missing == pool.links_planned - pool.links_added
    assert sum(row["shortfall"] for row in list_rows(store)) == pool.links_missing
    assert pool.lists_planned > lists_needed(pool_settings(), 0)  # more lists made up for them
    assert claimable(store, clock) >= pool_settings().target_available
    assert pool.shortfall == 0
    assert_consistent(sim, store)


def test_links_over_the_contact_frequency_limit_are_never_stored(
    run: Callable[..., RefillReport], sim: Simulator, store: Store
) -> None:
    sim.faults.exceeded_contact_frequency_rate = 0.5

    report = run()

    pool = report.pools[0]
    assert 0 < pool.links_added < pool.links_planned
    assert pool.links_missing == pool.links_planned - pool.links_added
    assert (
        pool.api_calls[LINKS] == 2 * pool.lists_ready
    )  # skipped links count as arrived: no re-reading
    assert_consistent(sim, store)


def test_a_stop_request_leaves_lists_for_the_next_run(
    run: Callable[..., RefillReport],
    sim: Simulator,
    client: QualtricsClient,
    store: Store,
    clock: ManualClock,
) -> None:
    stop = threading.Event()
    real = client.create_link_distribution

    def distribute_then_stop(**kwargs: Any) -> str:
        stop.set()
        return real(**kwargs)

    client.create_link_distribution = distribute_then_stop  # type: ignore[method-assign]
    stopped = run(stop=stop)

    assert stopped.pools[0].lists_ready == 0
    states = {row["state"] for row in list_rows(store)}
    assert ListState.DISTRIBUTED in states and states <= set(ListState.PROVISIONING)
    assert Lease(store, "refill:nps", clock).current_holder() is None  # released on the way out
    del client.create_link_distribution

    resumed = run()

    assert resumed.pools[0].lists_resumed == 3 and resumed.exit_code == 0
    assert_consistent(sim, store)


# --- the command -----------------------------------------------------------------------------


@pytest.fixture
def cli(
    tmp_path: Path, sqlite_url: str, sim: Simulator, clock: ManualClock, monkeypatch: Any
) -> Callable[..., Result]:
    """Run ``linkpool`` in-process against the simulator and the test database."""
    config = tmp_path / "linkpool.toml"
    config.write_text(
        f'[database]\nurl = "{sqlite_url}"\n\n'
        f'[qualtrics]\nbase_url = "{sim.base_url}"\ndirectory_id = "{sim.directory_id}"\n\n'
        f'[pools.nps]\nsurvey_id = "{SURVEY}"\ntarget_available = 10\nlow_water = 5\n'
        f'list_size = 4\nlink_ttl = "30d"\nmin_remaining = "1d"\n\n'
        f'[pools.off]\nsurvey_id = "{OTHER_SURVEY}"\ntarget_available = 4\nlow_water = 4\n'
        f'list_size = 4\nlink_ttl = "30d"\nmin_remaining = "1d"\n'
    )
    monkeypatch.setattr("linkpool.cli.app.App.qualtrics_client", lambda app: sim.client())

    def invoke(*args: str) -> Result:
        app = App(str(config), clock=clock)
        return CliRunner().invoke(main, ["--config", str(config), *args], obj=app)

    return invoke


def test_cli_refill_json_reports_each_pool_and_exits_1_when_one_failed(
    cli: Callable[..., Result], sim: Simulator
) -> None:
    sim.set_survey_active(OTHER_SURVEY, False)

    result = cli("refill", "--json")

    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["pools"]["nps"]["links_added"] == 12
    assert report["pools"]["nps"]["api_calls"][CREATE_LIST] == 3
    assert report["pools"]["off"]["errors"]


def test_cli_refill_one_pool_prints_a_table(cli: Callable[..., Result]) -> None:
    result = cli("refill", "--pool", "nps")

    assert result.exit_code == 0, result.output
    assert "links added" in result.stdout
    row = next(line for line in result.stdout.splitlines() if line.startswith("nps"))
    assert "0 -> 12" in row and row.rstrip().endswith("ok")
    assert "off" not in result.stdout


def test_cli_refill_already_running_exits_0(
    cli: Callable[..., Result], store: Store, clock: ManualClock
) -> None:
    running = Lease(store, "refill:nps", clock)
    running.acquire()
    running.start_heartbeat()

    result = cli("refill", "--pool", "nps", "--json")

    assert result.exit_code == 0
    skipped = json.loads(result.stdout)["pools"]["nps"]["skipped"]
    assert skipped.startswith("already running, held by host ")


def test_cli_refill_dry_run_changes_nothing(
    cli: Callable[..., Result], sim: Simulator, store: Store
) -> None:
    result = cli("refill", "--dry-run")

    assert result.exit_code == 0, result.output
    assert "dry run: nothing was changed" in result.stdout
    row = next(line for line in result.stdout.splitlines() if line.startswith("nps"))
    assert row.split()[1:5] == ["0", "0", "3", "12"]
    assert sum(sim.calls.values()) == 0
    assert list_rows(store) == []


def test_cli_refill_unknown_pool_exits_2(cli: Callable[..., Result]) -> None:
    result = cli("refill", "--pool", "nope")

    assert result.exit_code == 2
    assert "unknown pool 'nope'" in result.stderr


def test_a_list_in_doubt_is_settled_beside_the_filling_not_before_it(
    sim: Simulator, client: QualtricsClient, store: Store, clock: ManualClock
) -> None:
    """A run killed during an import's POST leaves a list whose contacts may or may not come:
    the next run watches it for minutes, but stocks the pool meanwhile."""
    doubtful = provision_list(client, store, clock, size=4, until=ListState.LIST_CREATED)
    store.update_list(doubtful, now=clock.now(), state=ListState.IMPORTING, import_id=None)
    filling = threading.Event()
    real_create_list, real_count = store.create_list, client.count_contacts

    def plan(**values: Any) -> int:
        filling.set()
        return real_create_list(**values)

    def count_once_filling(mailing_list_id: str) -> int:
        assert filling.wait(5), "the pool's filling waited for the list in doubt"
        return real_count(mailing_list_id)

    store.create_list = plan  # type: ignore[method-assign]
    client.count_contacts = count_once_filling  # type: ignore[method-assign]

    report = refill(make_settings(sim), client, store, clock)

    pool = report.pools[0]
    assert report.exit_code == 0, pool.errors
    assert (pool.lists_resumed, pool.lists_failed) == (1, 1)  # no contacts ever came
    assert claimable(store, clock) >= pool_settings().target_available
    assert_consistent(sim, store)


def test_links_whose_contact_id_is_not_an_id_are_not_stored() -> None:
    from datetime import UTC, datetime

    from linkpool.refill.links import links_of

    url = "https://iad1.qualtrics.com/jfe/form/SV_x?Q_DL=EMD_1_CGC_"
    elements = [
        {"externalDataReference": "s1", "contactId": "CGC_Good1", "link": url + "Good1"},
        {"externalDataReference": "s2", "contactId": "CGC_a,b", "link": url + "x"},
    ]
    expiry = datetime(2027, 1, 1, tzinfo=UTC)

    links, _ = links_of(elements, {"s1", "s2"}, expiry)

    assert [link.ext_ref for link in links] == ["s1"]
