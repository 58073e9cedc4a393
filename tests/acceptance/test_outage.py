"""Qualtrics down for a while (every call answered 500 or 503), then back."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from linkpool.db import create_engine, upgrade
from linkpool.simulator import Simulator
from tests.acceptance.harness import (
    Pool,
    available_links,
    claimed_links,
    describe,
    run_cli,
    run_json,
    unknown_live_lists,
    write_config,
)

POOL = Pool("outage", target_available=50, low_water=50, list_size=50)
CLAIMS = 3


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[sa.engine.Engine]:
    engine = create_engine(f"sqlite:///{tmp_path / 'linkpool.db'}")
    upgrade(engine)
    yield engine
    engine.dispose()


def test_claims_go_on_from_stock_while_qualtrics_is_down_and_refill_recovers(
    tmp_path: Path, simulator: Simulator, engine: sa.engine.Engine
) -> None:
    config = write_config(
        tmp_path,
        database_url=str(engine.url),
        base_url=simulator.base_url,
        pools=[POOL],
        qualtrics={"max_retries": 1},
    )
    assert run_json(config, "refill")["pools"][POOL.name]["claimable_after"] == 50

    simulator.faults.error_rate = 1.0
    for n in range(CLAIMS):
        claim = run_cli(config, "claim", POOL.name, "--recipient", f"cust-{n}")
        assert claim.returncode == 0, describe(claim)
    status = run_json(config, "status")["pools"][POOL.name]
    assert status["claimable"] == 50 - CLAIMS and status["health"] == "LOW"

    failed = run_cli(config, "refill")
    assert failed.returncode == 1, describe(failed)
    lines = failed.stderr.splitlines()
    assert len(lines) == 1, failed.stderr
    assert lines[0].startswith("linkpool: ")
    assert "Qualtrics is failing (5xx): try again later" in lines[0]
    synced = run_json(config, "sync")
    assert synced["written"] == 0 and synced["retrying"] == CLAIMS
    calls_while_down = sum(simulator.calls.values())
    assert calls_while_down > 0

    simulator.faults.error_rate = 0.0
    recovered = run_json(config, "refill")["pools"][POOL.name]
    assert recovered["errors"] == [] and recovered["lists_failed"] == 0
    assert recovered["claimable_after"] >= POOL.target_available
    assert unknown_live_lists(simulator.mailing_lists(), engine) == set()
    for link in available_links(engine) + claimed_links(engine):
        assert simulator.open_link(link["url"]).ok, link["id"]
    assert len(claimed_links(engine)) == CLAIMS
