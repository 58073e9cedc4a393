"""SIGINT and SIGTERM on real ``linkpool`` processes (issue 11 point 6): the first stops the
command between two steps and releases what it holds; a second one is handled as cleanly.

The simulator keeps every import in progress, so a refill sits in its longest wait (an import's
polling, up to 10 minutes): the signal must cut that wait short, not wait it out.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import sqlalchemy as sa

from linkpool.qualtrics.endpoints import GET_IMPORT
from linkpool.simulator import Simulator
from tests.acceptance.harness import (
    Pool,
    run_cli,
    start_cli,
    stop,
    stop_all,
    wait_until,
    write_config,
)

POOL = Pool("busy", target_available=200, low_water=100, list_size=20)
IMPORTS_NEVER_FINISH = 10**9
STOP_TIMEOUT = 90.0
SLOW_ANSWER = 1.5
"""Seconds the simulator takes over each answer, so a request is in flight when signals come."""


def leases(url: str) -> dict[str, str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(sa.text("SELECT name, holder FROM leases")).all()
    finally:
        engine.dispose()
    return {name: holder for name, holder in rows}


def configured(tmp_path: Path, simulator: Simulator) -> tuple[Path, str]:
    url = f"sqlite:///{tmp_path / 'linkpool.db'}"
    config = write_config(
        tmp_path,
        database_url=url,
        base_url=simulator.base_url,
        pools=[POOL],
        schedule={"refill_interval": "1h", "gc_interval": "1h", "sync_interval": "1h"},
    )
    assert run_cli(config, "db", "upgrade").returncode == 0
    return config, url


def signal_twice(process: subprocess.Popen[str], signum: int, log: Path) -> int:
    """One signal; once the process says it is stopping (a request is still in flight: the
    simulator answers slowly), a second one."""
    process.send_signal(signum)
    wait_until(lambda: "stopping" in log.read_text(), what="the process to say it stops")
    process.send_signal(signum)
    return stop(process, timeout=30)


def test_sigint_twice_stops_a_waiting_refill_and_releases_its_lease(
    tmp_path: Path, simulator: Simulator
) -> None:
    simulator.import_polls = IMPORTS_NEVER_FINISH
    config, url = configured(tmp_path, simulator)
    log = tmp_path / "refill.log"
    refill = start_cli(config, "refill", log=log)
    try:
        wait_until(
            lambda: simulator.calls[GET_IMPORT.key] >= 2, what="the refill to wait on an import"
        )
        assert "refill:busy" in leases(url)
        simulator.faults.latency = SLOW_ANSWER

        exit_code = signal_twice(refill, signal.SIGINT, log)
    finally:
        stop(refill, timeout=STOP_TIMEOUT)

    output = log.read_text()
    assert exit_code == 130, output
    assert "stopping after the current step" in output
    assert "still stopping" in output
    assert "Traceback" not in output
    assert "client has been closed" not in output
    assert leases(url) == {}
    assert "stopped" in output  # the report says the pool's refill stopped short


def test_sigterm_twice_stops_the_daemon_cleanly_and_releases_the_leader_lease(
    tmp_path: Path, simulator: Simulator
) -> None:
    simulator.import_polls = IMPORTS_NEVER_FINISH
    config, url = configured(tmp_path, simulator)
    log = tmp_path / "daemon.log"
    daemon = start_cli(config, "run", log=log)
    try:
        wait_until(lambda: "leader" in leases(url), what="the daemon to lead")
        wait_until(
            lambda: simulator.calls[GET_IMPORT.key] >= 2, what="its refill to wait on an import"
        )
        simulator.faults.latency = SLOW_ANSWER

        exit_code = signal_twice(daemon, signal.SIGTERM, log)
    finally:
        stop(daemon, timeout=STOP_TIMEOUT)

    output = log.read_text()
    assert exit_code == 0, output
    assert "Traceback" not in output
    assert "SchedulerNotRunningError" not in output
    assert "already stopping" in output
    assert "Qualtrics access checked" in output
    assert leases(url) == {}


def test_a_standby_daemon_says_it_follows_and_who_leads(
    tmp_path: Path, simulator: Simulator
) -> None:
    config, url = configured(tmp_path, simulator)
    leader = start_cli(config, "run", log=tmp_path / "leader.log")
    standby = None
    try:
        holder = wait_until(
            lambda: leases(url).get("leader"), what="the first daemon to lead", timeout=60
        )
        standby = start_cli(config, "run", log=tmp_path / "standby.log")
        line = wait_until(
            lambda: next(
                (
                    line
                    for line in (tmp_path / "standby.log").read_text().splitlines()
                    if "following" in line
                ),
                None,
            ),
            what="the standby to say it follows",
            timeout=60,
        )
    finally:
        # Generous: under load a request in flight may take up to [qualtrics] timeout to end.
        # Both are stopped, the leader too when the standby would not stop.
        codes = stop_all((standby, leader), timeout=STOP_TIMEOUT)
    logs = {name: (tmp_path / f"{name}.log").read_text() for name in ("leader", "standby")}
    host, pid, _ = holder.rsplit(":", 2)
    assert f"host {host}, pid {pid}" in line
    assert codes == [0, 0], logs


def test_a_daemon_whose_sqlite_file_is_deleted_stops_with_one_line(
    tmp_path: Path, simulator: Simulator
) -> None:
    """Issue 11 point 5: it must not go on provisioning into a ledger no one reads."""
    config, url = configured(tmp_path, simulator)
    log = tmp_path / "daemon.log"
    daemon = start_cli(config, "run", log=log)
    try:
        wait_until(lambda: "leader" in leases(url), what="the daemon to lead", timeout=60)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{tmp_path / 'linkpool.db'}{suffix}").unlink(missing_ok=True)

        exit_code = daemon.wait(timeout=30)
    finally:
        stop(daemon)

    output = log.read_text()
    assert exit_code == 1, output
    assert "Traceback" not in output
    assert output.count("was deleted or replaced while linkpool ran") == 2  # logged; the error
    assert output.rstrip().splitlines()[-1].startswith("linkpool: error: the SQLite database")
