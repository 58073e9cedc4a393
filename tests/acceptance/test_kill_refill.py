"""``kill -9`` of a refill at a random moment, then a refill and a gc: nothing leaks, all works.

The simulator's latency fault stretches the refill over a second or two, so that a kill lands
mid-way through some list's provisioning (in whatever state the seed picks). The refill that
follows runs once the dead refill's lease has lapsed: its clock is read ``LEASE_TTL`` ahead,
which is what a cron run that late would see; and, as that late, only after the simulator has
answered every request the dead process had in flight.
"""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from linkpool.config import load_settings
from linkpool.db import create_engine, upgrade
from linkpool.models import ListState
from linkpool.qualtrics.client import QualtricsClient
from linkpool.refill import refill
from linkpool.refill.machine import LEASE_TTL
from linkpool.simulator import Simulator
from linkpool.store import Store
from tests.acceptance.harness import (
    TOKEN,
    TOKEN_ENV,
    Pool,
    ShiftedClock,
    available_links,
    database_lists,
    requests_in_flight,
    run_json,
    start_cli,
    unknown_live_lists,
    wait_until,
    write_config,
)

POOLS = [
    Pool("alpha", target_available=100, low_water=100, list_size=25),
    Pool("beta", target_available=60, low_water=60, list_size=20),
]
LATENCY = 0.1
"""Seconds per call: the killed refill takes over a second after planning its first list."""
KILL_WINDOW = 0.9
"""The kill comes at most this long after the first list row appears, before the refill ends."""


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[sa.engine.Engine]:
    engine = create_engine(f"sqlite:///{tmp_path / 'linkpool.db'}")
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_refill_killed_at_a_random_moment_is_made_good_by_the_next_refill(
    seed: int,
    tmp_path: Path,
    simulator: Simulator,
    engine: sa.engine.Engine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = write_config(
        tmp_path,
        database_url=str(engine.url),
        base_url=simulator.base_url,
        pools=POOLS,
        qualtrics={"max_concurrency": 4},
    )
    simulator.faults.latency = LATENCY

    killed = start_cli(config, "refill", "--json", log=tmp_path / "killed-refill.log")
    wait_until(lambda: database_lists(engine), what="the refill to plan its first list")
    time.sleep(random.Random(seed).uniform(0.0, KILL_WINDOW))
    killed.send_signal(signal.SIGKILL)
    assert killed.wait(timeout=10) == -signal.SIGKILL, "the refill ended before it was killed"
    unfinished = [row for row in database_lists(engine) if row["state"] != ListState.READY]
    assert unfinished, "the kill left nothing unfinished: it came too late to test anything"

    # By the time the lease lapses, the server has long finished what the dead process sent.
    wait_until(lambda: requests_in_flight() == 0, what="the simulator to finish its requests")
    simulator.faults.latency = 0.0
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    settings = load_settings(config)
    clock = ShiftedClock(LEASE_TTL + timedelta(minutes=1))
    with QualtricsClient.from_settings(settings.require_qualtrics(), clock=clock) as client:
        report = refill(settings, client, Store(engine), clock)
    assert report.exit_code == 0, report.to_dict()
    assert all(pool.skipped is None for pool in report.pools)

    gc = run_json(config, "gc")
    assert gc["errors"] == []

    status = run_json(config, "status")["pools"]
    for pool in POOLS:
        assert status[pool.name]["claimable"] >= pool.target_available
    states = {row["state"] for row in database_lists(engine)}
    assert states <= {ListState.READY, ListState.FAILED, ListState.DELETED}
    assert unknown_live_lists(simulator.mailing_lists(), engine) == set()
    ready_distributions = {
        row["distribution_id"] for row in database_lists(engine) if row["state"] == ListState.READY
    }
    assert set(simulator.distributions()) == ready_distributions
    links = available_links(engine)
    assert len(links) == sum(status[pool.name]["available"] for pool in POOLS)
    broken = {link["id"]: simulator.open_link(link["url"]).reason for link in links}
    assert {reason for reason in broken.values()} == {"ok"}
