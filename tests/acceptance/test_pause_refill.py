"""A refill frozen (SIGSTOP) past its lease is overtaken, and on SIGCONT writes nothing more.

The first refill is stopped mid-way (the simulator's latency keeps it busy for seconds), stays
stopped until its leases lapse on the real clock, and a second refill takes them over and
brings every pool to target. Then the first is resumed: it must find its leases lost, call
Qualtrics no more and write no row, and exit 1 saying so. The proof is that nothing changed
between the moment the second refill finished and the moment the first exited: every row of
``lists`` and ``links``, the simulator's lists, distributions and call count. And no list was
provisioned twice: one distribution per live list, every live list known to the database.
"""

from __future__ import annotations

import json
import signal
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from linkpool.lease import DEFAULT_TTL
from linkpool.models import ListState
from linkpool.refill.machine import LOST_IMPORT_WAIT
from linkpool.simulator import Simulator
from tests.acceptance.harness import (
    Pool,
    assert_clean_output,
    database_lists,
    describe,
    held_by_process,
    pause_outside_transactions,
    run_cli,
    run_json,
    snapshot,
    start_cli,
    stop,
    unknown_live_lists,
    wait_until,
    write_config,
)

POOLS = [
    Pool("alpha", target_available=100, low_water=100, list_size=25),
    Pool("beta", target_available=60, low_water=60, list_size=20),
]
LATENCY = 0.2
"""Seconds per call: the first refill is still busy when it is stopped."""


def lapsed(rows: list[dict[str, object]]) -> bool:
    now = datetime.now(UTC).replace(tzinfo=None)
    return bool(rows) and all(_naive(row["expires_at"]) < now for row in rows)


def _naive(value: object) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    assert isinstance(value, datetime)
    return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value


MAX_CONCURRENCY = 4


@pytest.mark.parametrize("job_engine", ["sqlite", "postgresql"], indirect=True)
def test_a_paused_refill_is_overtaken_and_writes_nothing_when_it_resumes(
    tmp_path: Path, simulator: Simulator, job_engine: sa.engine.Engine
) -> None:
    engine = job_engine
    config = write_config(
        tmp_path,
        database_url=engine.url.render_as_string(hide_password=False),
        base_url=simulator.base_url,
        pools=POOLS,
        qualtrics={"max_concurrency": MAX_CONCURRENCY},
    )
    simulator.faults.latency = LATENCY
    log = tmp_path / "paused.log"
    paused = start_cli(config, "refill", "--json", log=tmp_path / "paused.json", errors=log)
    try:
        wait_until(
            lambda: any(row["state"] != ListState.PLANNED for row in database_lists(engine)),
            what="the first refill to be under way",
        )
        pause_outside_transactions(paused, engine)
        wait_until(
            lambda: lapsed(held_by_process(engine, paused.pid)),
            timeout=(DEFAULT_TTL * 2).total_seconds(),
            what="the paused refill's leases to lapse",
        )
        unfinished = [row for row in database_lists(engine) if row["state"] != ListState.READY]
        assert unfinished, "the first refill had finished: the pause tests nothing"

        # A list whose import the pause left in doubt is watched for LOST_IMPORT_WAIT.
        finish = LOST_IMPORT_WAIT.total_seconds() + 60
        result = run_cli(config, "refill", "--json", timeout=finish)
        assert result.returncode == 0, describe(result)
        second = json.loads(result.stdout)
        assert all(pool["skipped"] is None for pool in second["pools"].values()), second
        assert (
            second["pools"]["alpha"]["lists_resumed"] + second["pools"]["beta"]["lists_resumed"]
            >= 1
        )
        rows_before = snapshot(engine)
        calls_before = Counter(simulator.calls)
        lists_before, distributions_before = simulator.mailing_lists(), simulator.distributions()

        paused.send_signal(signal.SIGCONT)
        exit_code = paused.wait(timeout=60)
    finally:
        if paused.poll() is None:
            paused.send_signal(signal.SIGCONT)
            paused.kill()
            paused.wait()

    output = log.read_text()
    assert_clean_output(output + (tmp_path / "paused.json").read_text())
    assert exit_code == 1, output
    assert "was not renewed for 30s" in output or "taken over" in output, output
    assert snapshot(engine) == rows_before  # not one row written by the stale holder
    # A worker thread frozen between its lease check and its request sends that one request on
    # resume (Qualtrics cannot be fenced): at most one per request slot, and never a write.
    late_calls = Counter(simulator.calls) - calls_before
    assert sum(late_calls.values()) <= MAX_CONCURRENCY, late_calls
    assert all(call.startswith("GET ") for call in late_calls), late_calls
    assert simulator.mailing_lists() == lists_before
    assert simulator.distributions() == distributions_before

    status = run_json(config, "status")["pools"]
    for pool in POOLS:
        assert status[pool.name]["claimable"] >= pool.target_available
    assert unknown_live_lists(simulator.mailing_lists(), engine) == set()
    per_list = Counter(d["mailingListId"] for d in simulator.distributions().values())
    assert set(per_list.values()) == {1}, per_list  # no list got two distributions
    ready = [row for row in database_lists(engine) if row["state"] == ListState.READY]
    assert {row["distribution_id"] for row in ready} == set(simulator.distributions())
    assert len({row["mailing_list_id"] for row in ready}) == len(ready)


def test_already_running_names_a_live_holder_and_exits_0(
    tmp_path: Path, simulator: Simulator, job_engine: sa.engine.Engine
) -> None:
    """While a refill is alive (slow, not stopped), a second one names it and exits 0."""
    engine = job_engine
    config = write_config(
        tmp_path,
        database_url=engine.url.render_as_string(hide_password=False),
        base_url=simulator.base_url,
        pools=POOLS[:1],
        qualtrics={"max_concurrency": 1},
    )
    simulator.faults.latency = 1.0  # slow enough to outlast the second refill's watching
    first = start_cli(config, "refill", "--json", log=tmp_path / "first.json")
    try:
        wait_until(
            lambda: held_by_process(engine, first.pid), what="the first refill to hold its lease"
        )
        # A list whose import the pause left in doubt is watched for LOST_IMPORT_WAIT.
        finish = LOST_IMPORT_WAIT.total_seconds() + 60
        result = run_cli(config, "refill", "--json", timeout=finish)
        assert result.returncode == 0, describe(result)
        second = json.loads(result.stdout)
    finally:
        stop(first, timeout=60)
    skipped = second["pools"]["alpha"]["skipped"]
    assert skipped.startswith("already running, held by host "), skipped
    assert f", pid {first.pid}, since " in skipped
    assert second["exit_code"] == 0
