"""Refills racing on PostgreSQL: however many run at once, a pool is provisioned exactly once."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from linkpool.clock import ManualClock
from linkpool.config import PoolSettings, QualtricsSettings, Settings
from linkpool.db import create_engine
from linkpool.models import ListState, links, lists
from linkpool.refill import RefillReport, refill
from linkpool.simulator import Simulator
from linkpool.store import Store

SURVEY = "SV_SimSurvey0001"
POOL = PoolSettings(
    name="nps",
    survey_id=SURVEY,
    target_available=20,
    low_water=10,
    list_size=5,
    link_ttl=timedelta(days=30),
    min_remaining=timedelta(days=1),
)


def settings_for(sim: Simulator) -> Settings:
    qualtrics = QualtricsSettings(base_url=sim.base_url, directory_id=sim.directory_id)
    return Settings(qualtrics=qualtrics, pools={POOL.name: POOL})


def table(engine: sa.engine.Engine, which: sa.Table) -> list[dict[str, Any]]:
    with engine.connect() as connection:
        return [dict(row) for row in connection.execute(sa.select(which)).mappings()]


def assert_provisioned_once(sim: Simulator, engine: sa.engine.Engine) -> None:
    rows = table(engine, lists)
    assert len(rows) == 4 and {row["state"] for row in rows} == {ListState.READY}
    assert set(sim.mailing_lists()) == {row["mailing_list_id"] for row in rows}
    assert not sim.deleted_mailing_lists()
    stored = table(engine, links)
    assert len(stored) == 20
    assert len({row["url"] for row in stored}) == 20


def test_a_refill_started_while_another_runs_reports_already_running(
    postgres_url: str, pg_engine: sa.engine.Engine
) -> None:
    clock = ManualClock()
    sim = Simulator(clock=clock)
    settings = settings_for(sim)
    inside, release = threading.Event(), threading.Event()
    first_client, second_client = sim.client(), sim.client()
    real_create = first_client.create_mailing_list

    def create_and_hold(name: str) -> str:
        inside.set()
        assert release.wait(10)
        return real_create(name)

    first_client.create_mailing_list = create_and_hold  # type: ignore[method-assign]
    first_engine, second_engine = create_engine(postgres_url), create_engine(postgres_url)
    try:
        with ThreadPoolExecutor(max_workers=1) as executor:
            first = executor.submit(refill, settings, first_client, Store(first_engine), clock)
            assert inside.wait(10)
            second = refill(settings, second_client, Store(second_engine), clock)
            release.set()
            first_report = first.result(timeout=30)
    finally:
        release.set()
        first_engine.dispose()
        second_engine.dispose()

    skipped = second.pools[0].skipped
    assert skipped is not None and skipped.startswith("already running, held by host ")
    assert second.exit_code == 0
    assert sum(second.api_calls.values()) == 0
    assert first_report.pools[0].links_added == 20
    assert_provisioned_once(sim, pg_engine)


def test_many_refills_racing_provision_exactly_once(
    postgres_url: str, pg_engine: sa.engine.Engine
) -> None:
    clock = ManualClock()
    sim = Simulator(clock=clock)
    sim.faults.latency = 0.005  # keep each refill busy long enough for the others to collide
    settings = settings_for(sim)
    racers = 6
    barrier = threading.Barrier(racers)

    def race() -> RefillReport:
        engine = create_engine(postgres_url)
        try:
            with sim.client() as client:
                barrier.wait(10)
                return refill(settings, client, Store(engine), clock)
        finally:
            engine.dispose()

    with ThreadPoolExecutor(max_workers=racers) as executor:
        reports = list(executor.map(lambda _: race(), range(racers)))

    pools = [report.pools[0] for report in reports]
    assert all(report.exit_code == 0 for report in reports)
    assert sum(pool.links_added for pool in pools) == 20
    assert sum(pool.lists_planned for pool in pools) == 4
    assert any((pool.skipped or "").startswith("already running") for pool in pools)
    assert_provisioned_once(sim, pg_engine)
