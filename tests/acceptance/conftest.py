"""Fixtures of the acceptance tests: a simulator served over HTTP from this process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from linkpool.db import create_engine, upgrade
from linkpool.simulator import Simulator
from linkpool.simulator.server import running
from tests.acceptance.harness import SURVEY_ID, TOKEN


@pytest.fixture
def simulator() -> Iterator[Simulator]:
    """An in-process simulator on a free loopback port (``simulator.base_url``), so that tests
    can read its state directly while linkpool subprocesses talk to it over HTTP."""
    sim = Simulator(token=TOKEN, surveys=[SURVEY_ID])
    sim.import_polls = 1
    with running(sim):
        yield sim


@pytest.fixture(params=["sqlite", "postgresql"])
def job_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sa.engine.Engine]:
    """A migrated, empty database for linkpool subprocesses: a SQLite file, or the session's
    PostgreSQL database (emptied first)."""
    if request.param == "postgresql":
        yield request.getfixturevalue("pg_engine")
        return
    engine = create_engine(f"sqlite:///{tmp_path / 'linkpool.db'}")
    upgrade(engine)
    yield engine
    engine.dispose()
