"""``kill -9`` of ``linkpool responses`` mid-export and mid-update, on SQLite and PostgreSQL:
the next run converges (every answered claim marked, its data on its response) without a
second export of the same window or a second bulk update of the same responses.

The killed run is a real ``linkpool responses`` process against the simulator served over
HTTP. The run after it is the same code in this process, started at once on the real clock:
it waits for the dead run's lease to lapse (30 s after its last heartbeat at most) and takes
it over, as in ``test_kill_refill``.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from linkpool.clock import SystemClock
from linkpool.config import load_settings
from linkpool.db import create_engine, upgrade
from linkpool.models import Enrichment, links, response_cursors, response_updates
from linkpool.pool import LinkPool
from linkpool.qualtrics.client import QualtricsClient
from linkpool.responses import track_responses
from linkpool.simulator import Simulator
from linkpool.store import Store
from tests.acceptance.harness import (
    TOKEN,
    TOKEN_ENV,
    Pool,
    requests_in_flight,
    run_json,
    start_cli,
    wait_until,
    write_config,
)

POOL = Pool("nps", target_available=30, low_water=30, list_size=30)
ANSWERED = 20


@pytest.fixture(params=["sqlite", "postgres"])
def engine(request, tmp_path: Path) -> Iterator[sa.engine.Engine]:
    if request.param == "postgres":
        yield request.getfixturevalue("pg_engine")
        return
    engine = create_engine(f"sqlite:///{tmp_path / 'linkpool.db'}")
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def config(tmp_path: Path, simulator: Simulator, engine: sa.engine.Engine) -> Path:
    path = write_config(
        tmp_path,
        database_url=engine.url.render_as_string(hide_password=False),
        base_url=simulator.base_url,
        pools=[POOL],
    )
    with path.open("a", encoding="utf-8") as handle:
        handle.write('enrichment = "response"\n\n[responses]\npoll_interval = "1s"\n')
    return path


@pytest.fixture
def answered(config: Path, simulator: Simulator, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """A refilled pool, every link claimed, ``ANSWERED`` of them answered: their recipients."""
    assert (
        run_json(config, "refill")["pools"][POOL.name]["claimable_after"] == POOL.target_available
    )
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    with LinkPool.from_config(config) as lp:
        claims = [
            lp.claim(POOL.name, recipient=f"cust-{n}", data={"order": f"A-{n}"})
            for n in range(POOL.target_available)
        ]
    for claim in claims[:ANSWERED]:
        assert simulator.respond(claim.url).ok
    return [claim.recipient for claim in claims[:ANSWERED]]


def table(engine: sa.engine.Engine, which: sa.Table) -> list[dict]:
    with engine.connect() as connection:
        return [dict(row) for row in connection.execute(sa.select(which)).mappings()]


def kill_when(config: Path, tmp_path: Path, condition, what: str) -> None:
    process = start_cli(config, "responses", log=tmp_path / "killed-responses.log")
    try:
        wait_until(condition, timeout=60, what=what)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    assert process.returncode == -signal.SIGKILL, (tmp_path / "killed-responses.log").read_text()
    wait_until(lambda: requests_in_flight() == 0, what="the simulator to finish its requests")


def run_after_the_dead_one(config: Path) -> dict:
    settings = load_settings(config)
    engine = create_engine(settings.database_url)
    clock = SystemClock()
    try:
        with QualtricsClient.from_settings(settings.require_qualtrics(), clock=clock) as client:
            report = track_responses(settings, client, Store(engine), clock)
    finally:
        engine.dispose()
    assert report.errors == [], report.to_dict()
    return report.to_dict()


def assert_converged(engine: sa.engine.Engine, simulator: Simulator, answered: list[str]) -> None:
    rows = {row["recipient"]: row for row in table(engine, links)}
    for recipient in answered:
        assert rows[recipient]["response_id"] is not None, recipient
        assert rows[recipient]["enrichment"] == Enrichment.DONE, recipient
    assert all(
        row["response_id"] is None for name, row in rows.items() if name not in set(answered)
    )
    on_responses = {r.embedded_data.get("linkpool_recipient") for r in simulator.responses()}
    assert on_responses == set(answered)
    assert {r.embedded_data["order"] for r in simulator.responses()} == {
        f"A-{name.removeprefix('cust-')}" for name in answered
    }


def test_a_run_killed_mid_export_is_resumed_on_the_same_export(
    tmp_path, config, engine, simulator, answered, monkeypatch
):
    simulator.faults.export_polls = 10_000  # the export never finishes while it runs

    kill_when(
        config,
        tmp_path,
        lambda: any(row["export_progress_id"] for row in table(engine, response_cursors)),
        "the run to start its export",
    )

    assert len(simulator.brand.exports) == 1
    (export,) = simulator.brand.exports.values()
    export.polls_needed = export.polls + 1  # from now on it finishes at the next poll
    simulator.faults.export_polls = 2
    report = run_after_the_dead_one(config)

    assert len(simulator.brand.exports) == 1, "the next run started an export of its own"
    assert report["answered"] == ANSWERED and report["enriched"] == ANSWERED
    assert_converged(engine, simulator, answered)
    again = run_after_the_dead_one(config)
    assert (again["answered"], again["enriched"]) == (0, 0)
    assert "POST /surveys/{surveyId}/update-responses" not in again["api_calls"]


def test_a_run_killed_mid_update_converges_without_a_second_bulk_job(
    tmp_path, config, engine, simulator, answered
):
    simulator.faults.latency = 0.3  # the bulk update's POST takes a while to answer

    kill_when(
        config,
        tmp_path,
        lambda: table(engine, response_updates),
        "the run to record its bulk update",
    )
    simulator.faults.latency = 0.0
    report = run_after_the_dead_one(config)

    assert len(simulator.brand.updates) == 1, "the claims were sent in a second bulk job"
    assert report["enrichment_failed"] == 0
    assert_converged(engine, simulator, answered)
    states = {row["state"] for row in table(engine, response_updates)}
    assert states <= {"complete", "unknown"}
