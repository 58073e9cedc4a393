"""Claimers in 8 processes while the daemon refills, syncs and gcs on PostgreSQL, with the
simulator rate-limiting and failing 5% of calls.

The pool starts at its target, well above what the claimers take in all, so it never runs dry:
every claim must succeed, and any ``PoolExhausted`` is a claim that failed while the pool had
stock. The claims take the pool below low water, so the daemon has to refill it meanwhile.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from linkpool.simulator import Simulator
from linkpool.simulator.http import ApiError
from tests.acceptance.harness import (
    Pool,
    claimed_links,
    linkpool_env,
    run_json,
    start_cli,
    stop,
    stop_all,
    unknown_live_lists,
    wait_until,
    write_config,
)

REPO = Path(__file__).resolve().parents[2]
POOL = Pool("busy", target_available=400, low_water=300, list_size=100)
CLAIMERS = 8
CLAIMS_EACH = 25
RATE_LIMIT = 120
"""Requests a minute: below what sync and refill ask for together, so some get 429."""
REFILL_TIMEOUT = 150
"""Seconds the daemon gets to bring the pool back above low water once the claims are done.

The budget sets it, not the machine: sync's 200 write-backs alone take 100 s of 120 requests a
minute, and refill shares that budget with them (each side backing off from its own 429s), so a
loaded machine can need well over a minute. A quiet one refills in about 15 s; the wait ends then.
"""
SCHEDULE = {"refill_interval": "1s", "gc_interval": "2s", "sync_interval": "1s"}


def count_rate_limited(simulator: Simulator) -> list[int]:
    """Wrap the simulator's fault injection to count the 429s it answers."""
    answered = [0]
    inject = simulator.inject_faults

    def counting() -> None:
        try:
            inject()
        except ApiError as error:
            if error.status == 429:
                answered[0] += 1
            raise

    simulator.inject_faults = counting  # type: ignore[method-assign]
    return answered


def leader(engine: sa.engine.Engine) -> str | None:
    with engine.connect() as connection:
        query = sa.text("SELECT holder FROM leases WHERE name = 'leader'")
        return connection.execute(query).scalar()


def start_claimers(config: Path, tmp_path: Path) -> list[tuple[subprocess.Popen[str], Path]]:
    claimers = []
    for worker in range(CLAIMERS):
        output = tmp_path / f"claims-{worker}.jsonl"
        command = [sys.executable, "-m", "tests.acceptance.claimer", str(config), POOL.name]
        command += [str(worker), str(CLAIMS_EACH), str(output)]
        process = subprocess.Popen(
            command, cwd=REPO, env=linkpool_env(), stderr=subprocess.PIPE, text=True
        )
        claimers.append((process, output))
    return claimers


def finish_claimers(claimers: list[tuple[subprocess.Popen[str], Path]]) -> list[dict[str, Any]]:
    """Every claimer's records; each claimer is stopped, also when another failed."""
    records = []
    try:
        for process, output in claimers:
            _, stderr = process.communicate(timeout=60)
            assert process.returncode == 0, stderr
            records += [json.loads(line) for line in output.read_text().splitlines()]
    finally:
        stop_all(process for process, _ in claimers)
    return records


def test_claimers_and_the_daemon_under_rate_limits_and_failures(
    tmp_path: Path, simulator: Simulator, postgres_url: str, pg_engine: sa.engine.Engine
) -> None:
    config = write_config(
        tmp_path,
        database_url=postgres_url,
        base_url=simulator.base_url,
        pools=[POOL],
        schedule=SCHEDULE,
    )
    assert run_json(config, "refill")["pools"][POOL.name]["claimable_after"] == 400
    rate_limited = count_rate_limited(simulator)
    simulator.faults.rate_limit_per_minute = RATE_LIMIT
    simulator.faults.error_rate = 0.05

    daemon = start_cli(config, "run", log=tmp_path / "daemon.log")
    try:
        wait_until(lambda: leader(pg_engine), what="the daemon to take the leader lease")
        claims = finish_claimers(start_claimers(config, tmp_path))
        refilled = wait_until(
            lambda: run_json(config, "status")["pools"][POOL.name]["claimable"] >= POOL.low_water,
            timeout=REFILL_TIMEOUT,
            interval=0.5,
            what="the daemon to refill the pool above low water",
        )
        assert daemon.poll() is None, "the daemon died"
    finally:
        exit_code = stop(daemon)
    log = (tmp_path / "daemon.log").read_text()
    assert exit_code == 0, log
    assert "Traceback" not in log
    assert refilled

    failures = [claim for claim in claims if not claim["ok"]]
    assert failures == []
    assert len(claims) == CLAIMERS * CLAIMS_EACH
    link_ids = [claim["link_id"] for claim in claims]
    assert len(set(link_ids)) == len(link_ids), "a link was handed out twice"
    assert len({claim["url"] for claim in claims}) == len(claims)
    stored = {link["id"]: link for link in claimed_links(pg_engine)}
    assert set(stored) == set(link_ids)
    assert all(stored[claim["link_id"]]["recipient"] == claim["recipient"] for claim in claims)

    broken = {
        claim["link_id"]: check.reason
        for claim in claims
        if not (check := simulator.open_link(claim["url"])).ok
    }
    assert broken == {}
    assert unknown_live_lists(simulator.mailing_lists(), pg_engine) == set()
    assert rate_limited[0] > 0, "the test did not exercise rate limiting"
