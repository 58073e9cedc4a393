"""Fixtures of the acceptance tests: a simulator served over HTTP from this process."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

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
