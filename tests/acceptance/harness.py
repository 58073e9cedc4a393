"""What the acceptance tests share: linkpool as users run it, in separate processes.

The simulator is served over HTTP on loopback, either in this process (``running()``, so a test
can inspect its state directly) or as a ``linkpool simulator`` subprocess driven through its
``/_simulator`` control surface. linkpool itself runs as ``linkpool …`` subprocesses reading a
configuration file written into the test's temporary directory, with the token in the
environment.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from linkpool.models import LinkStatus, ListState

TOKEN = "e2e-secret-token-7f3a9c"
"""Not the simulator's default, so that finding it in any output means it leaked."""
TOKEN_ENV = "QUALTRICS_API_TOKEN"
SURVEY_ID = "SV_SimSurvey0001"
DIRECTORY_ID = "POOL_SimDirectory01"
LINKPOOL = str(Path(sys.executable).with_name("linkpool"))
PROCESS_TIMEOUT = 60.0


# --- processes ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def linkpool_env(**extra: str) -> dict[str, str]:
    """The environment of a linkpool subprocess: ours, the token, nothing from LINKPOOL_*."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("LINKPOOL_")}
    env[TOKEN_ENV] = TOKEN
    env.update(extra)
    return env


def run_cli(
    config: Path, *args: str, timeout: float = PROCESS_TIMEOUT
) -> subprocess.CompletedProcess[str]:
    """``linkpool --config CONFIG ARGS…`` to completion; whatever it exits with, it must not
    print a traceback or the token."""
    result = subprocess.run(
        [LINKPOOL, "--config", str(config), *args],
        capture_output=True,
        text=True,
        env=linkpool_env(),
        timeout=timeout,
        check=False,
    )
    assert_clean_output(result.stdout + result.stderr)
    return result


def run_json(config: Path, *args: str, expect_exit: int = 0) -> Any:
    """Run a command with ``--json``, check its exit code and parse what it printed."""
    result = run_cli(config, *args, "--json")
    assert result.returncode == expect_exit, describe(result)
    return json.loads(result.stdout)


def start_cli(
    config: Path, *args: str, log: Path, errors: Path | None = None
) -> subprocess.Popen[str]:
    """``linkpool --config CONFIG ARGS…`` in the background, stdout and stderr into ``log``
    (stderr into ``errors`` instead, if given)."""
    with log.open("w") as handle, (errors or log).open("a") as error_handle:
        return subprocess.Popen(
            [LINKPOOL, "--config", str(config), *args],
            stdout=handle,
            stderr=error_handle if errors else subprocess.STDOUT,
            text=True,
            env=linkpool_env(),
        )


def stop(process: subprocess.Popen[str], *, timeout: float = 30.0) -> int:
    """SIGTERM, then wait; SIGKILL if it does not stop in time (and fail, it should have)."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise AssertionError(
            f"pid {process.pid} did not stop within {timeout}s of SIGTERM"
        ) from None


def stop_all(
    processes: Iterable[subprocess.Popen[Any] | None], *, timeout: float = 30.0
) -> list[int]:
    """``stop`` each process (None: one never started), every one even after another failed to
    stop; their exit codes, in order. The first failure is raised once all are stopped."""
    codes: list[int] = []
    failure: AssertionError | None = None
    for process in processes:
        if process is None:
            continue
        try:
            codes.append(stop(process, timeout=timeout))
        except AssertionError as error:
            failure = failure or error
    if failure is not None:
        raise failure
    return codes


def describe(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"


def wait_until(
    condition: Callable[[], Any], *, timeout: float = 30.0, interval: float = 0.05, what: str
) -> Any:
    """Poll ``condition`` until it returns something truthy; fail naming ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def requests_in_flight() -> int:
    """Requests the in-process simulator server is still handling (one thread each)."""
    return sum("process_request_thread" in thread.name for thread in threading.enumerate())


def assert_clean_output(text: str) -> None:
    """No traceback and no token in anything linkpool printed."""
    assert "Traceback" not in text, text
    assert TOKEN not in text, "the API token leaked into the output"


# --- configuration -----------------------------------------------------------------------


@dataclass(frozen=True)
class Pool:
    name: str
    target_available: int
    low_water: int
    list_size: int
    link_ttl: str = "30d"
    min_remaining: str = "1d"

    def toml(self) -> str:
        return "\n".join(
            [
                f"[pools.{self.name}]",
                f'survey_id = "{SURVEY_ID}"',
                f"target_available = {self.target_available}",
                f"low_water = {self.low_water}",
                f"list_size = {self.list_size}",
                f'link_ttl = "{self.link_ttl}"',
                f'min_remaining = "{self.min_remaining}"',
                'embedded_data = { source = "e2e" }',
            ]
        )


def write_config(
    directory: Path,
    *,
    database_url: str,
    base_url: str,
    pools: list[Pool],
    qualtrics: Mapping[str, Any] | None = None,
    schedule: Mapping[str, str] | None = None,
) -> Path:
    """A linkpool.toml in ``directory``; ``qualtrics`` and ``schedule`` add keys to those tables."""
    lines = [
        "[database]",
        f'url = "{database_url}"',
        "",
        "[qualtrics]",
        f'base_url = "{base_url}"',
        f'directory_id = "{DIRECTORY_ID}"',
        f'api_token_env = "{TOKEN_ENV}"',
        *(f"{key} = {json.dumps(value)}" for key, value in (qualtrics or {}).items()),
    ]
    if schedule:
        lines += ["", "[schedule]", *(f'{key} = "{value}"' for key, value in schedule.items())]
    for pool in pools:
        lines += ["", pool.toml()]
    path = directory / "linkpool.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# --- the simulator as a subprocess -------------------------------------------------------


class SimulatorProcess:
    """``linkpool simulator`` on a free port, with its ``/_simulator`` control surface."""

    def __init__(self, process: subprocess.Popen[str], port: int) -> None:
        self.process = process
        self.root = f"http://127.0.0.1:{port}"
        self.base_url = f"{self.root}/API/v3"
        self.http = httpx.Client(base_url=self.root, headers={"X-API-TOKEN": TOKEN}, timeout=10)

    def set_faults(self, **faults: Any) -> dict[str, Any]:
        response = self.http.put("/_simulator/faults", json=faults)
        response.raise_for_status()
        return dict(response.json()["result"])

    def open_link(self, url: str) -> dict[str, Any]:
        response = self.http.post("/_simulator/open-link", json={"url": url})
        response.raise_for_status()
        return dict(response.json()["result"])

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.http.request(method, f"/API/v3{path}", **kwargs)
        response.raise_for_status()
        return response.json()["result"]


@contextmanager
def simulator_process(*args: str) -> Iterator[SimulatorProcess]:
    """Start ``linkpool simulator`` and wait until it answers."""
    port = free_port()
    process = subprocess.Popen(
        [
            LINKPOOL,
            "simulator",
            "--port",
            str(port),
            "--token",
            TOKEN,
            "--survey",
            SURVEY_ID,
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    simulator = SimulatorProcess(process, port)
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert f"listening on {simulator.base_url}" in first, first
        yield simulator
    finally:
        simulator.http.close()
        stop(process, timeout=10)


# --- what the database and the simulator hold --------------------------------------------


def database_lists(engine: sa.engine.Engine) -> list[dict[str, Any]]:
    with engine.connect() as connection:
        rows = connection.execute(
            sa.text("SELECT id, pool, name, state, mailing_list_id, distribution_id FROM lists")
        )
        return [dict(row._mapping) for row in rows]


def links_with_status(engine: sa.engine.Engine, status: str) -> list[dict[str, Any]]:
    query = sa.text("SELECT id, pool, url, expires_at, recipient FROM links WHERE status = :status")
    with engine.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(query, {"status": status})]


def unknown_live_lists(live_mailing_lists: Mapping[str, Any], engine: sa.engine.Engine) -> set[str]:
    """Mailing lists alive on Qualtrics that the database does not hold as a live list."""
    live = {ListState.READY, *ListState.PROVISIONING}
    known = {row["mailing_list_id"] for row in database_lists(engine) if row["state"] in live}
    return set(live_mailing_lists) - known


def lease_rows(engine: sa.engine.Engine) -> list[dict[str, Any]]:
    with engine.connect() as connection:
        rows = connection.execute(sa.text("SELECT name, holder, expires_at FROM leases"))
        return [dict(row._mapping) for row in rows]


def held_by_process(engine: sa.engine.Engine, pid: int) -> list[dict[str, Any]]:
    """The leases whose holder id (``host:pid:random``) names process ``pid``."""
    return [row for row in lease_rows(engine) if row["holder"].split(":")[-2] == str(pid)]


def writer_in_transaction(engine: sa.engine.Engine) -> bool:
    """Whether another process is inside a write transaction right now: on SQLite, the write
    lock cannot be taken at once; on PostgreSQL, a session of the database is idle in one."""
    if engine.dialect.name == "sqlite":
        connection = sqlite3.connect(str(engine.url.database), timeout=0)
        try:
            connection.execute("BEGIN IMMEDIATE")
            connection.rollback()
            return False
        except sqlite3.OperationalError:
            return True
        finally:
            connection.close()
    query = sa.text(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid() AND state LIKE 'idle in transaction%'"
    )
    with engine.connect() as connection:
        return bool(connection.execute(query).scalar())


def pause_outside_transactions(process: subprocess.Popen[str], engine: sa.engine.Engine) -> None:
    """SIGSTOP ``process`` at a moment it is not inside a write transaction (one frozen there
    would hold its locks, and every writer would wait: see docs/operating.md)."""
    while True:
        process.send_signal(signal.SIGSTOP)
        time.sleep(0.2)  # a statement under way on the server finishes
        if not writer_in_transaction(engine):
            return
        process.send_signal(signal.SIGCONT)
        time.sleep(0.05)


def snapshot(engine: sa.engine.Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of ``lists`` and ``links``, in id order: equal snapshots, nothing written."""
    with engine.connect() as connection:
        return {
            table: [
                tuple(row)
                for row in connection.execute(sa.text(f"SELECT * FROM {table} ORDER BY id"))
            ]
            for table in ("lists", "links")
        }


def available_links(engine: sa.engine.Engine) -> list[dict[str, Any]]:
    return links_with_status(engine, LinkStatus.AVAILABLE)


def claimed_links(engine: sa.engine.Engine) -> list[dict[str, Any]]:
    return links_with_status(engine, LinkStatus.CLAIMED)


# --- a private PostgreSQL server ---------------------------------------------------------

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def private_postgres_problem() -> str | None:
    """Why a private PostgreSQL server cannot be run here, or None when it can."""
    if not (PG_BIN / "initdb").exists():
        return f"no PostgreSQL server binaries in {PG_BIN}"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root (initdb refuses) and runuser is missing"
    if os.geteuid() == 0:
        try:
            import pwd

            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root (initdb refuses) and there is no 'postgres' user"
    return None


class PrivatePostgres:
    """A throwaway PostgreSQL cluster on a free port, to stop and start at will.

    initdb refuses to run as root, so as root the cluster belongs to the ``postgres`` user.
    """

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="linkpool-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        if os.geteuid() == 0:
            shutil.chown(self.root, user="postgres")
        self._run("initdb", "-D", str(self.data), "--auth=trust", "-U", "postgres", "-E", "UTF8")

    def _run(self, tool: str, *args: str) -> None:
        command = [str(PG_BIN / tool), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        log = str(self.root / "server.log")
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", log, "-w", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def destroy(self) -> None:
        try:
            self.stop()
        except subprocess.CalledProcessError:
            pass  # it was not running
        shutil.rmtree(self.root, ignore_errors=True)
