"""A database password never reaches any output (issue 10 point 7).

The local PostgreSQL trusts every connection, so a wrong password is accepted there; the tests
instead make the server refuse the URL for the other reasons a password is typed beside: a closed
port, a database that does not exist, a role that does not exist, a host that does not resolve.
Each URL carries the password ``SECRET``, and every test asserts it appears nowhere: in the CLI's
stdout and stderr (real processes), the daemon's log, a logged traceback, or a repr.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from linkpool import LinkPool, PoolSettings
from linkpool.clock import ManualClock
from linkpool.config import Settings, settings_from_mapping
from linkpool.db import create_engine, read_transaction
from linkpool.errors import ConfigError, DatabaseError
from linkpool.scheduler import Daemon
from linkpool.store import Store

SECRET = "Pa55-w0rd-s3cr3t"
LINKPOOL = str(Path(sys.executable).with_name("linkpool"))
POOL = PoolSettings(name="nps", survey_id="SV_TestSurvey00001")


def _url_on(postgres_url: str, **parts: str | int) -> str:
    url = sa.engine.make_url(postgres_url).set(password=SECRET, **parts)  # type: ignore[arg-type]
    return url.render_as_string(hide_password=False)


@pytest.fixture(
    params=["closed port", "no such database", "no such role", "unresolvable host"],
)
def refused_url(request: pytest.FixtureRequest, postgres_url: str) -> str:
    """A URL with a password that the server (or the network) refuses."""
    return {
        "closed port": lambda: _url_on(postgres_url, port=1),
        "no such database": lambda: _url_on(postgres_url, database="linkpool_no_such_db"),
        "no such role": lambda: _url_on(postgres_url, username="linkpool_no_such_role"),
        "unresolvable host": lambda: _url_on(postgres_url, host="linkpool-db.invalid"),
    }[request.param]()


def cli(tmp_path: Path, database_url: str) -> Callable[..., subprocess.CompletedProcess[str]]:
    config = tmp_path / "linkpool.toml"
    config.write_text(
        f'[database]\nurl = "{database_url}"\n\n'
        '[qualtrics]\nbase_url = "http://127.0.0.1:1/API/v3"\ndirectory_id = "POOL_Directory0001"\n\n'
        '[pools.nps]\nsurvey_id = "SV_TestSurvey00001"\n',
        encoding="utf-8",
    )

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "QUALTRICS_API_TOKEN": "token-for-tests"}
        env.pop("LINKPOOL_DATABASE_URL", None)
        return subprocess.run(
            [LINKPOOL, "--config", str(config), *args],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )

    return run


@pytest.mark.parametrize(
    "command",
    [
        ("status",),
        ("status", "--json"),
        ("claim", "nps", "--recipient", "r1"),
        ("db", "upgrade"),
        ("export", "nps"),
        ("run",),
    ],
    ids=" ".join,
)
def test_a_refused_url_gives_one_line_without_the_password(
    tmp_path: Path, refused_url: str, command: tuple[str, ...]
) -> None:
    result = cli(tmp_path, refused_url)(*command)

    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert SECRET not in output
    assert "Traceback" not in output
    assert "database" in result.stderr.strip().splitlines()[-1]


def test_the_error_and_its_traceback_never_carry_the_password(refused_url: str) -> None:
    engine = create_engine(refused_url)
    with pytest.raises(DatabaseError) as raised:
        with read_transaction(engine) as connection:
            connection.execute(sa.text("SELECT 1"))

    assert SECRET not in str(raised.value)
    assert SECRET not in "".join(traceback.format_exception(raised.value))


def test_the_daemons_log_never_carries_the_password(
    refused_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    daemon = Daemon(Settings(), None, Store(create_engine(refused_url)), ManualClock())
    with caplog.at_level(logging.DEBUG):
        outcome = daemon.run_job("sync")

    assert not outcome.ran
    assert "database is unavailable" in caplog.text
    formatted = [logging.Formatter().format(record) for record in caplog.records]
    assert formatted and all(SECRET not in line for line in formatted)


def test_reprs_never_carry_the_password(refused_url: str) -> None:
    engine = create_engine(refused_url)
    settings = Settings(database_url=refused_url, pools={"nps": POOL})
    pool = LinkPool(engine=engine, pools=[POOL], check_schema=False)

    for thing in (engine, engine.url, settings, pool, Store(engine)):
        assert SECRET not in repr(thing) and SECRET not in str(thing)


def test_a_password_in_the_query_is_masked_like_one_in_the_url(postgres_url: str) -> None:
    url = sa.engine.make_url(postgres_url).update_query_dict({"password": SECRET})
    engine = create_engine(url.render_as_string(hide_password=False))

    with read_transaction(engine) as connection:  # trust auth: it connects with it
        assert connection.execute(sa.text("SELECT 1")).scalar() == 1
    assert SECRET not in repr(engine)
    assert engine.url.password == SECRET


@pytest.mark.parametrize("password", [f"{SECRET}@part", f"x@{SECRET}"])
def test_an_unescaped_at_sign_is_refused_before_part_of_it_becomes_the_host(
    postgres_url: str, password: str
) -> None:
    base = sa.engine.make_url(postgres_url)
    url = f"postgresql://postgres:{password}@{base.host}:{base.port}/{base.database}"

    with pytest.raises(DatabaseError, match="write it as %40") as raised:
        create_engine(url)
    assert SECRET not in str(raised.value)
    with pytest.raises(ConfigError, match="write it as %40") as refused:
        settings_from_mapping({"database": {"url": url}})
    assert SECRET not in str(refused.value)
