"""The database restarted under the daemon: a private PostgreSQL server stopped and started.

A private server (not the shared one the other tests use) so that stopping it disturbs no one.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy.pool import QueuePool

from linkpool import Claim, DatabaseError, LinkPool
from linkpool.db import create_engine, upgrade
from linkpool.simulator import Simulator
from tests.acceptance.harness import (
    Pool,
    PrivatePostgres,
    claimed_links,
    private_postgres_problem,
    start_cli,
    stop,
    wait_until,
    write_config,
)

POOL = Pool("steady", target_available=100, low_water=100, list_size=50)
SCHEDULE = {"refill_interval": "1s", "gc_interval": "2s", "sync_interval": "1s"}

problem = private_postgres_problem()
pytestmark = pytest.mark.skipif(problem is not None, reason=f"no private PostgreSQL: {problem}")


@pytest.fixture
def postgres() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres()
    try:
        server.start()
        engine = create_engine(server.url)
        upgrade(engine)
        engine.dispose()
        yield server
    finally:
        server.destroy()


def claimable(pool: LinkPool) -> int:
    return pool.counts(POOL.name).claimable


def test_the_daemon_and_claims_come_back_after_the_database_restarts(
    tmp_path: Path, simulator: Simulator, postgres: PrivatePostgres
) -> None:
    config = write_config(
        tmp_path,
        database_url=postgres.url,
        base_url=simulator.base_url,
        pools=[POOL],
        schedule=SCHEDULE,
    )
    log = tmp_path / "daemon.log"
    daemon = start_cli(config, "run", log=log)
    try:
        with LinkPool.from_config(config) as pool:
            wait_until(
                lambda: claimable(pool) >= POOL.target_available,
                what="the daemon's first refill",
            )
            # Claims from several threads: the pool holds several connections the restart kills.
            with ThreadPoolExecutor(max_workers=4) as threads:
                before = list(
                    threads.map(
                        lambda n: pool.claim(POOL.name, recipient=f"before-restart-{n}"), range(8)
                    )
                )
            connections = pool.engine.pool
            assert isinstance(connections, QueuePool) and connections.checkedin() > 1

            postgres.stop()
            with pytest.raises(DatabaseError) as raised:
                pool.claim(POOL.name, recipient="while-down")
            message = str(raised.value)
            assert "\n" not in message
            assert "check [database] url and that the database is up" in message
            wait_until(
                lambda: "while the database is unavailable" in log.read_text(),
                what="the daemon to find the database down",
            )
            assert daemon.poll() is None, "the daemon died with the database"

            postgres.start()
            after: list[Claim] = []  # down to below low water, so that the daemon must refill
            while claimable(pool) >= POOL.low_water:
                after.append(pool.claim(POOL.name, recipient=f"after-restart-{len(after)}"))
            wait_until(
                lambda: claimable(pool) >= POOL.target_available,
                what="the daemon to refill after the restart",
            )
            wait_until(
                lambda: pool.counts(POOL.name).writeback_pending == 0,
                what="the daemon to sync the claims made after the restart",
            )
            assert daemon.poll() is None
    finally:
        exit_code = stop(daemon)
    assert exit_code == 0, log.read_text()
    assert "Traceback" not in log.read_text()

    engine = create_engine(postgres.url)
    try:
        claimed = {link["recipient"] for link in claimed_links(engine)}
    finally:
        engine.dispose()
    assert claimed == {claim.recipient for claim in before + after}
    for claim in before + after:
        assert simulator.open_link(claim.url).ok
        contact = simulator.contact(claim.contact_id)
        assert contact["embeddedData"]["linkpool_recipient"] == claim.recipient
