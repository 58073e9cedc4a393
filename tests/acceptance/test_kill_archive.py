"""``linkpool archive`` killed (SIGKILL) at moments spread over its run, then run again: no
claim is ever lost, the file is either absent or complete, and the delete is all or nothing."""

from __future__ import annotations

import gzip
import json
import signal
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from bench.ledger import seed_history
from linkpool.db import create_engine, upgrade
from linkpool.models import links, lists
from tests.acceptance.harness import LINKPOOL, linkpool_env, stop

CLAIMS = 20_000
POOL_CONFIG = '[pools.nps]\nsurvey_id = "SV_SimSurvey0001"\n'


def claimed_ids(engine: sa.engine.Engine) -> set[int]:
    with engine.connect() as connection:
        query = sa.select(links.c.id).where(links.c.status == "claimed")
        return set(connection.execute(query).scalars())


def archived_ids(path: Path) -> list[int]:
    with gzip.open(path, "rt", encoding="utf-8") as stream:
        return [json.loads(line)["link_id"] for line in stream]


def seed(engine: sa.engine.Engine) -> tuple[set[int], set[int]]:
    """CLAIMS claims of deleted lists, one list of which is then made live again: its claims
    must stay. Returns (the ids to archive, the ids to keep)."""
    seed_history(engine, "nps", CLAIMS, end=datetime.now(UTC) - timedelta(days=1))
    with engine.begin() as connection:
        live = connection.execute(sa.select(sa.func.min(lists.c.id))).scalar_one()
        connection.execute(sa.update(lists).where(lists.c.id == live).values(state="ready"))
        kept = set(
            connection.execute(sa.select(links.c.id).where(links.c.list_id == live)).scalars()
        )
    return claimed_ids(engine) - kept, kept


def check_invariant(engine, output: Path, to_archive: set[int], kept: set[int]) -> None:
    in_database = claimed_ids(engine)
    assert kept <= in_database
    if output.exists():
        assert archived_ids(output) == sorted(to_archive)  # complete, or not there at all
    else:
        assert to_archive <= in_database  # nothing removed before the file was durable
    assert to_archive & in_database in (to_archive, set())  # the delete is all or nothing


def run_archive(config: Path, output: Path, kill_after: float | None):
    args = [LINKPOOL, "--config", str(config), "archive", "--before", "1h", "--output", str(output)]
    process = subprocess.Popen(args, env=linkpool_env(), stdout=subprocess.PIPE, text=True)
    try:
        if kill_after is not None:
            time.sleep(kill_after)
            process.send_signal(signal.SIGKILL)
        stdout, _ = process.communicate(timeout=120)
    finally:
        stop(process)
    return process.returncode, stdout


def kill_and_rerun(url: str, tmp_path: Path) -> None:
    engine = create_engine(url)
    try:
        to_archive, kept = seed(engine)
        config = tmp_path / "linkpool.toml"
        config.write_text(f'[database]\nurl = "{url}"\n\n{POOL_CONFIG}', encoding="utf-8")
        output = tmp_path / "claims.jsonl.gz"
        kills, delay = 0, 0.2
        while True:
            returncode, _ = run_archive(config, output, kill_after=delay)
            check_invariant(engine, output, to_archive, kept)
            if returncode == 0:
                break
            assert returncode == -signal.SIGKILL
            kills += 1
            delay *= 1.5
        assert kills >= 3
        returncode, stdout = run_archive(config, output, kill_after=None)
        assert returncode == 0, stdout
        assert claimed_ids(engine) == kept
        assert archived_ids(output) == sorted(to_archive)
        assert not list(tmp_path.glob("*.partial"))
    finally:
        engine.dispose()


def test_a_killed_archive_loses_nothing_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'archive.db'}"
    engine = create_engine(url)
    upgrade(engine)
    engine.dispose()
    kill_and_rerun(url, tmp_path)


@pytest.mark.postgres
def test_a_killed_archive_loses_nothing_on_postgres(pg_engine, postgres_url: str, tmp_path) -> None:
    kill_and_rerun(postgres_url, tmp_path)
