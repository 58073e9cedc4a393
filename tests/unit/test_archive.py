"""``linkpool export --since`` and ``linkpool archive``: what they take, what they leave."""

from __future__ import annotations

import csv
import gzip
import io
import json
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result

from linkpool import config
from linkpool.archive import archive, write_archive
from linkpool.cli import App, main
from linkpool.clock import ManualClock
from linkpool.config import PoolSettings
from linkpool.models import ListState, links
from linkpool.pool import LinkPool
from linkpool.store import Store
from tests.conftest import SURVEY_ID
from tests.unit.test_cli import assert_clean_failure, config_text

DAY = timedelta(days=1)


@pytest.fixture
def run(tmp_path: Path, sqlite_url: str, clock: ManualClock, monkeypatch: pytest.MonkeyPatch):
    """Invoke ``linkpool ARGS`` on the test database with the test clock."""
    monkeypatch.delenv(config.CONFIG_ENV, raising=False)
    monkeypatch.delenv(config.DATABASE_URL_ENV, raising=False)
    path = tmp_path / "linkpool.toml"
    path.write_text(config_text(sqlite_url), encoding="utf-8")

    def invoke(*args: str) -> Result:
        return CliRunner().invoke(main, list(args), obj=App(str(path), clock=clock))

    return invoke


def close(store: Store, list_id: int, clock: ManualClock) -> None:
    state = store.get_list(list_id).state
    assert store.begin_reaping(list_id, state=state, now=clock.now()) is not None
    assert store.close_list(list_id, now=clock.now())


@pytest.fixture
def history(run, store: Store, seed, clock: ManualClock) -> dict[str, list[int]]:
    """nps: two claims on day 0 and one on day 5 from list A (then deleted on day 45), one on
    day 45 from list B (live); pool low: one claim on day 0 from a deleted list."""
    start = clock.now()
    seed(store, "nps", 4, now=start, expires_at=start + 30 * DAY)
    seed(store, "low", 2, now=start, expires_at=start + 30 * DAY)

    def claim(pool: str, recipient: str) -> int:
        args = ("claim", pool, "--recipient", recipient, "--data", '{"n": "1"}', "--json")
        result = run(*args)
        assert result.exit_code == 0, result.output
        return int(json.loads(result.stdout)["link_id"])

    old = [claim("nps", "a"), claim("nps", "b")]
    other = [claim("low", "x")]
    clock.advance(5 * DAY)
    middle = [claim("nps", "c")]
    clock.advance(40 * DAY)
    for list_record in store.lists_in_states([ListState.READY]):
        close(store, list_record.id, clock)
    seed(store, "nps", 3, now=clock.now(), expires_at=clock.now() + 30 * DAY)
    recent = [claim("nps", "d")]
    return {"old": old, "other": other, "middle": middle, "recent": recent}


def stored_ids(store: Store) -> set[int]:
    with store.read() as connection:
        query = sa.select(links.c.id).where(links.c.status == "claimed")
        return set(connection.execute(query).scalars())


def jsonl(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as stream:
        return [json.loads(line) for line in stream]


def exported(run, *args: str) -> list[str]:
    result = run("export", "nps", *args)
    assert result.exit_code == 0, result.output
    return [row["recipient"] for row in csv.DictReader(io.StringIO(result.stdout))]


def test_export_since_keeps_claims_at_or_after_the_time(run, history, clock) -> None:
    assert exported(run) == ["a", "b", "c", "d"]
    assert exported(run, "--since", "39d") == ["d"]
    assert exported(run, "--since", "41d") == ["c", "d"]
    day5 = (clock.now() - 40 * DAY).isoformat()
    assert exported(run, "--since", day5) == ["c", "d"]
    assert exported(run, "--since", clock.now().date().isoformat()) == ["d"]
    assert exported(run, "--since", "2999-01-01") == []


@pytest.mark.parametrize("value", ["yesterday", "2026-13-01", "5 days"])
def test_export_since_garbage_exits_2(run, history, value: str) -> None:
    line = assert_clean_failure(run("export", "nps", "--since", value), 2)

    assert "--since" in line and "ISO 8601" in line


def test_archive_moves_old_claims_of_deleted_lists(run, store, history, tmp_path, clock) -> None:
    output = tmp_path / "claims-2026.jsonl.gz"
    before = store.counts("nps", clock.now(), DAY)

    result = run("archive", "--before", "43d", "--output", str(output))

    assert result.exit_code == 0, result.output
    assert "archived 3 claim(s)" in result.stdout
    records = jsonl(output)
    assert [r["link_id"] for r in records] == sorted(history["old"] + history["other"])
    assert {r["pool"] for r in records} == {"nps", "low"}
    assert [r["recipient"] for r in records if r["pool"] == "nps"] == ["a", "b"]
    assert records[0]["data"] == {"n": "1"} and records[0]["url"].startswith("https://")
    assert stored_ids(store) == set(history["middle"] + history["recent"])
    assert exported(run) == ["c", "d"]
    after = store.counts("nps", clock.now(), DAY)
    assert (after.claimed, after.void) == (before.claimed, before.void) == (4, 1)
    assert not list(tmp_path.glob("*.partial"))


def test_archive_rerun_changes_nothing_and_never_overwrites(run, store, history, tmp_path):
    output = tmp_path / "a.jsonl.gz"
    assert run("archive", "--before", "43d", "--output", str(output)).exit_code == 0
    content = output.read_bytes()

    again = run("archive", "--before", "1d", "--output", str(output))

    assert again.exit_code == 0, again.output
    assert "exists: removed the 0 claim(s)" in again.stdout
    assert output.read_bytes() == content
    assert stored_ids(store) == set(history["middle"] + history["recent"])


def test_archive_finishes_a_run_killed_after_its_file(store, history, tmp_path, clock) -> None:
    output = tmp_path / "a.jsonl.gz"
    cutoff = clock.now() - 39 * DAY
    assert write_archive(store, before=cutoff, path=output, fmt="jsonl") == 4  # then "killed"
    assert len(stored_ids(store)) == 5

    result = archive(store, before=cutoff, path=output)

    assert (result.existed, result.written, result.removed) == (True, 0, 4)
    assert stored_ids(store) == set(history["recent"])
    assert [r["link_id"] for r in jsonl(output)] == sorted(
        history["old"] + history["other"] + history["middle"]
    )


def test_archive_csv(run, store, history, tmp_path, clock) -> None:
    output = tmp_path / "a.csv.gz"

    assert (
        run("archive", "--before", "43d", "--output", str(output), "--format", "csv").exit_code == 0
    )

    with gzip.open(output, "rt", encoding="utf-8", newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert [int(row["link_id"]) for row in rows] == sorted(history["old"] + history["other"])
    assert json.loads(rows[0]["data"]) == {"n": "1"}
    assert archive(store, before=clock.now(), path=output, fmt="csv").removed == 0


def test_archive_with_nothing_to_move_writes_no_file(run, store, history, tmp_path) -> None:
    (tmp_path / "out").mkdir()
    output = tmp_path / "out" / "a.jsonl.gz"

    result = run("archive", "--before", "100d", "--output", str(output))

    assert result.exit_code == 0, result.output
    assert "nothing to archive" in result.stdout
    assert not list(output.parent.iterdir())


def test_archive_refuses_a_file_that_is_not_an_archive(run, store, history, tmp_path) -> None:
    output = tmp_path / "notes.txt"
    output.write_text("my notes\n", encoding="utf-8")

    line = assert_clean_failure(run("archive", "--before", "43d", "--output", str(output)), 2)

    assert "not a linkpool archive" in line
    assert output.read_text(encoding="utf-8") == "my notes\n"
    assert len(stored_ids(store)) == 5


def test_archive_needs_a_valid_before(run, history, tmp_path) -> None:
    line = assert_clean_failure(
        run("archive", "--before", "last year", "--output", str(tmp_path / "a.gz")), 2
    )

    assert "--before" in line
    assert not list(tmp_path.glob("a.gz*"))


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_export_rows_format_times_as_isoformat_does(database, request, clock, seed) -> None:
    store: Store = request.getfixturevalue("store" if database == "sqlite" else "pg_store")
    seed(store, "nps", 3, now=clock.now(), expires_at=clock.now() + 30 * DAY)
    lp = LinkPool(
        engine=store.engine, pools=[PoolSettings(name="nps", survey_id=SURVEY_ID)], clock=clock
    )
    lp.claim("nps", recipient="whole-second", data={"b": 1, "a": "é"})
    clock.advance(timedelta(microseconds=1234))
    lp.claim("nps", recipient="fraction")
    clock.advance(timedelta(microseconds=120000 - 1234))
    lp.claim("nps", recipient="trailing zeros")

    rows = [row for batch in store.export_rows("nps") for row in batch]
    records = list(store.iter_claims("nps"))

    assert [row[0] for row in rows] == [r.claimed_at.isoformat() for r in records]
    assert [row[5] for row in rows] == [r.expires_at.isoformat() for r in records]
    assert rows[0][0].endswith(":00+00:00") and rows[1][0].endswith(".001234+00:00")
    assert rows[2][0].endswith(".120000+00:00")
    assert rows[0][3] == '{"a":"é","b":1}'
    assert [row[4] for row in rows] == [r.url for r in records]


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_the_database_writes_the_csv_csv_reader_reads(database, request, clock, seed) -> None:
    store: Store = request.getfixturevalue("store" if database == "sqlite" else "pg_store")
    seed(store, "nps", 8, now=clock.now(), expires_at=clock.now() + 30 * DAY)
    lp = LinkPool(
        engine=store.engine, pools=[PoolSettings(name="nps", survey_id=SURVEY_ID)], clock=clock
    )
    awkward = ["plain", "a,b", 'say "hi"', "line\nbreak", "carriage\rreturn", " spaced ", "é"]
    for recipient in awkward:
        lp.claim("nps", recipient=recipient, key=recipient + "|k", data={"v": recipient * 60})
    lp.claim("nps", recipient="no key, no data")
    chunks: list[str] = []

    count = store.copy_csv("nps", None, chunks.append)

    rows = [row for batch in store.export_rows("nps") for row in batch]
    written = "".join(chunks)
    parsed = list(csv.reader(io.StringIO(written, newline="")))
    assert count == len(rows) == len(awkward) + 1
    assert parsed == [[value or "" for value in row] for row in rows]
    assert [row[1] for row in parsed] == [*awkward, "no key, no data"]
    assert written.count("\n") == len(rows) + 2  # one per row, and in two quoted values


def test_archive_leaves_a_claim_whose_erasure_is_pending(run, store, history, tmp_path) -> None:
    waiting = history["old"][0]
    with store.write() as connection:
        connection.execute(sa.update(links).where(links.c.id == waiting).values(erasure="pending"))

    assert run("archive", "--before", "43d", "--output", str(tmp_path / "a.gz")).exit_code == 0

    assert [r["link_id"] for r in jsonl(tmp_path / "a.gz")] == sorted(
        history["old"][1:] + history["other"]
    )
    assert waiting in stored_ids(store)
