"""Health checks (``linkpool.health``) and ``linkpool status --check``: stock, failed
write-backs and the last successful refill, with their exit codes."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result

from linkpool.cli import App, main
from linkpool.clock import ManualClock
from linkpool.config import PoolSettings
from linkpool.health import CHECK_FAILED_EXIT, pool_findings
from linkpool.models import links
from linkpool.simulator import Simulator
from linkpool.store import PoolCounts, Store

SURVEY = "SV_SimSurvey0001"
POOL_TOML = (
    f'[pools.nps]\nsurvey_id = "{SURVEY}"\ntarget_available = 10\nlow_water = 5\n'
    'list_size = 4\nlink_ttl = "30d"\nmin_remaining = "1d"\n'
)


@pytest.fixture
def sim(clock: ManualClock) -> Simulator:
    return Simulator(clock=clock, surveys=(SURVEY,))


@pytest.fixture
def cli(
    tmp_path: Path, sqlite_url: str, sim: Simulator, clock: ManualClock, monkeypatch: Any
) -> Callable[..., Result]:
    config = tmp_path / "linkpool.toml"
    config.write_text(
        f'[database]\nurl = "{sqlite_url}"\n\n'
        f'[qualtrics]\nbase_url = "{sim.base_url}"\ndirectory_id = "{sim.directory_id}"\n\n'
        f'[schedule]\nrefill_interval = "10m"\n\n{POOL_TOML}'
    )
    monkeypatch.setattr("linkpool.cli.app.App.qualtrics_client", lambda app: sim.client())

    def invoke(*args: str) -> Result:
        app = App(str(config), clock=clock)
        return CliRunner().invoke(main, ["--config", str(config), *args], obj=app)

    return invoke


def counts(claimable: int, writeback_failed: int = 0) -> PoolCounts:
    return PoolCounts(
        available=claimable,
        claimable=claimable,
        claimed=0,
        claimed_24h=0,
        expired=0,
        void=0,
        writeback_pending=0,
        writeback_failed=writeback_failed,
        lists=(),
    )


def test_a_stocked_pool_refilled_recently_has_no_findings(clock: ManualClock) -> None:
    pool = PoolSettings(name="nps", survey_id=SURVEY, target_available=10, low_water=5)
    findings = pool_findings(
        pool, counts(8), clock.now(), now=clock.now(), refill_interval=timedelta(minutes=5)
    )
    assert findings == []


def test_each_condition_is_its_own_finding(clock: ManualClock) -> None:
    pool = PoolSettings(name="nps", survey_id=SURVEY, target_available=10, low_water=5)
    last = clock.now() - timedelta(minutes=16)
    findings = pool_findings(
        pool,
        counts(0, writeback_failed=2),
        last,
        now=clock.now(),
        refill_interval=timedelta(minutes=5),
        max_intervals=3,
    )
    assert [(f.check, f.message.split(":")[0]) for f in findings] == [
        ("stock", "EMPTY"),
        ("writeback", "2 write-back(s) failed"),
        ("refill", "no refill has succeeded since 2026-11-22T08"),
    ]
    assert pool_findings(
        pool, counts(3), None, now=clock.now(), refill_interval=timedelta(minutes=5)
    )[1].message == ("no refill has succeeded yet")


def test_status_check_passes_after_a_refill_and_fails_when_refills_stop(
    cli: Callable[..., Result], clock: ManualClock
) -> None:
    before = cli("status", "--check")
    assert before.exit_code == CHECK_FAILED_EXIT
    assert before.output.splitlines() == [
        "nps: stock: EMPTY: 0 claimable, low_water 5",
        "nps: refill: no refill has succeeded yet",
    ]

    assert cli("refill").exit_code == 0
    healthy = cli("status", "--check")
    assert (healthy.exit_code, healthy.output) == (0, "OK: 1 pool(s) healthy\n")

    clock.advance(timedelta(minutes=31))  # three intervals of 10m, and a minute
    stale = cli("status", "--check", "--json")
    assert stale.exit_code == CHECK_FAILED_EXIT
    document = json.loads(stale.output)
    assert document["ok"] is False
    assert [problem["check"] for problem in document["problems"]] == ["refill"]
    assert cli("status", "--check", "--max-intervals", "4").exit_code == 0


def test_status_check_fails_on_failed_write_backs(
    cli: Callable[..., Result], sqlite_url: str
) -> None:
    assert cli("refill").exit_code == 0
    assert cli("claim", "nps", "--recipient", "r1").exit_code == 0
    engine = sa.create_engine(sqlite_url)
    with engine.begin() as connection:
        connection.execute(
            sa.update(links).where(links.c.recipient == "r1").values(writeback="failed")
        )
    engine.dispose()

    result = cli("status", "--check")

    assert result.exit_code == CHECK_FAILED_EXIT
    assert result.output.startswith("nps: writeback: 1 write-back(s) failed")


def test_status_check_cannot_read_the_database_is_exit_1(
    cli: Callable[..., Result], store: Store, sqlite_url: str
) -> None:
    Path(sqlite_url.removeprefix("sqlite:///")).write_bytes(b"not a database" * 100)

    result = cli("status", "--check")

    assert result.exit_code == 1
    assert "database" in result.output
