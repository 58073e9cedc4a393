"""The ``linkpool`` command for this issue: db upgrade, claim, status, export, and exit codes."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from linkpool import config
from linkpool.cli import App, main
from linkpool.clock import ManualClock
from linkpool.store import Store
from tests.conftest import SURVEY_ID, SeedLinks

DAY = timedelta(days=1)
ROOT = Path(__file__).resolve().parents[2]
STATUS_KEYS = {
    "claimable",
    "available",
    "too_old",
    "claimed",
    "claimed_24h",
    "expired",
    "void",
    "health",
    "low_water",
    "target_available",
    "lists",
    "writeback_pending",
    "answered",
    "answered_24h",
    "finished",
    "response_rate",
    "responses_on_unclaimed_links",
    "enrichment_pending",
    "enrichment_failed",
    "writeback_failed",
}
CLAIM_KEYS = {
    "pool",
    "recipient",
    "key",
    "data",
    "url",
    "expires_at",
    "contact_id",
    "contact_lookup_id",
    "claimed_at",
    "link_id",
    "replayed",
}


def config_text(database_url: str) -> str:
    pools = "".join(
        f'[pools.{name}]\nsurvey_id = "{SURVEY_ID}"\ntarget_available = 10\nlow_water = 5\n'
        for name in ("nps", "low", "empty")
    )
    return f'[database]\nurl = "{database_url}"\n\n{pools}'


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(config.CONFIG_ENV, raising=False)
    monkeypatch.delenv(config.DATABASE_URL_ENV, raising=False)


@pytest.fixture
def config_path(tmp_path: Path, sqlite_url: str) -> Path:
    path = tmp_path / "linkpool.toml"
    path.write_text(config_text(sqlite_url), encoding="utf-8")
    return path


@pytest.fixture
def run(config_path: Path, clock: ManualClock):
    """Invoke ``linkpool ARGS`` with the test clock; a fresh App (so fresh settings) per call."""

    def invoke(*args: str, path: Path = config_path) -> Result:
        return CliRunner().invoke(main, list(args), obj=App(str(path), clock=clock))

    return invoke


@pytest.fixture
def stock(store: Store, seed: SeedLinks, clock: ManualClock):
    def add(count: int, days: float = 30, pool: str = "nps") -> list[int]:
        return seed(store, pool, count, now=clock.now(), expires_at=clock.now() + days * DAY)

    return add


def assert_clean_failure(result: Result, exit_code: int) -> str:
    """An expected failure: the exit code, one line on stderr, no traceback. Returns the line."""
    assert result.exit_code == exit_code, result.output
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


# --- db upgrade ---------------------------------------------------------------------------


def test_db_upgrade_creates_then_reports_it_is_current(tmp_path: Path, run) -> None:
    path = tmp_path / "fresh.toml"
    path.write_text(config_text(f"sqlite:///{tmp_path / 'fresh.db'}"), encoding="utf-8")

    first = run("db", "upgrade", path=path)
    second = run("db", "upgrade", path=path)

    assert first.exit_code == 0, first.output
    assert "database upgraded from empty to" in first.stdout
    assert second.exit_code == 0, second.output
    assert "database already at revision" in second.stdout
    assert run("status", path=path).exit_code == 0


def test_config_option_is_read_by_the_command(tmp_path: Path, config_path: Path) -> None:
    result = CliRunner().invoke(main, ["--config", str(config_path), "status", "--json"])

    assert result.exit_code == 0, result.output
    assert set(json.loads(result.stdout)["pools"]) == {"nps", "low", "empty"}


def test_missing_config_file_exits_2_naming_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.toml"

    result = CliRunner().invoke(main, ["--config", str(missing), "status"])

    line = assert_clean_failure(result, 2)
    assert str(missing) in line


def test_invalid_config_exits_2_naming_file_and_key(tmp_path: Path, run) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[pools.nps]\nsurvey_id = "SV_TestSurvey00001"\nlist_size = 0\n')

    line = assert_clean_failure(run("status", path=path), 2)

    assert str(path) in line
    assert "pools.nps.list_size" in line


def test_unmigrated_database_exits_1_asking_for_db_upgrade(tmp_path: Path, run) -> None:
    path = tmp_path / "unmigrated.toml"
    path.write_text(config_text(f"sqlite:///{tmp_path / 'unmigrated.db'}"), encoding="utf-8")

    for args in (("status",), ("claim", "nps", "--recipient", "r"), ("export", "nps")):
        line = assert_clean_failure(run(*args, path=path), 1)
        assert "linkpool db upgrade" in line


# --- claim --------------------------------------------------------------------------------


def test_claim_prints_the_url(run, stock) -> None:
    stock(1)

    result = run("claim", "nps", "--recipient", "cust-42")

    assert result.exit_code == 0, result.output
    assert re.fullmatch(r"https://sim1\.qualtrics\.com/jfe/form/SV_\S+\n", result.stdout)


def test_claim_json_prints_the_documented_fields(run, stock, clock: ManualClock) -> None:
    stock(1)

    result = run(
        "claim", "nps", "--recipient", "cust-42", "--key", "txn-981", "--data", '{"store":"12"}',
        "--json",
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    claim = json.loads(result.stdout)
    assert set(claim) == CLAIM_KEYS
    assert claim["pool"] == "nps"
    assert claim["recipient"] == "cust-42"
    assert claim["key"] == "txn-981"
    assert claim["data"] == {"store": "12"}
    assert claim["url"].startswith("https://sim1.qualtrics.com/jfe/form/")
    assert claim["claimed_at"] == clock.now().isoformat()
    assert claim["expires_at"] == (clock.now() + 30 * DAY).isoformat()
    assert claim["replayed"] is False


def test_claim_repeated_key_returns_the_same_link(run, stock) -> None:
    stock(3)
    args = ("claim", "nps", "--recipient", "cust-42", "--key", "txn-981", "--json")

    first = json.loads(run(*args).stdout)
    again = json.loads(run(*args).stdout)

    assert again["url"] == first["url"]
    assert again["link_id"] == first["link_id"]
    assert again["replayed"] is True


def test_claim_key_reused_for_someone_else_exits_1(run, stock) -> None:
    stock(3)
    run("claim", "nps", "--recipient", "cust-42", "--key", "txn-981")

    line = assert_clean_failure(
        run("claim", "nps", "--recipient", "cust-43", "--key", "txn-981"), 1
    )

    assert "txn-981" in line


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("{not json", "not valid JSON"),
        ('["a", "list"]', "must be a JSON object"),
        ('"a string"', "must be a JSON object"),
        (json.dumps({"blob": "x" * (64 * 1024)}), "64 KiB"),
    ],
)
def test_claim_bad_data_exits_2(run, stock, store: Store, data: str, message: str) -> None:
    stock(1)

    line = assert_clean_failure(run("claim", "nps", "--recipient", "cust-1", "--data", data), 2)

    assert message in line
    assert json.loads(run("status", "--json").stdout)["pools"]["nps"]["claimed"] == 0


def test_claim_empty_recipient_exits_2(run, stock) -> None:
    stock(1)

    line = assert_clean_failure(run("claim", "nps", "--recipient", " "), 2)

    assert "recipient" in line


def test_claim_unknown_pool_exits_2_listing_the_pools(run) -> None:
    line = assert_clean_failure(run("claim", "nope", "--recipient", "cust-1"), 2)

    assert "'nope'" in line
    assert "empty, low, nps" in line


def test_claim_exhausted_pool_exits_3(run, stock) -> None:
    stock(2, days=3)  # only links with less than min_remaining left

    line = assert_clean_failure(run("claim", "nps", "--recipient", "cust-1"), 3)

    assert "'nps' is exhausted" in line
    assert "2 available link(s)" in line


def test_claim_without_recipient_is_a_usage_error(run) -> None:
    result = run("claim", "nps")

    assert result.exit_code == 2
    assert "--recipient" in result.stderr
    assert "Traceback" not in result.output


# --- status -------------------------------------------------------------------------------


@pytest.fixture
def stocked(run, stock) -> None:
    """nps: 6 claimable (OK at low_water 5) and 1 claimed; low: 3 claimable (LOW); empty: none."""
    stock(7, pool="nps")
    stock(3, pool="low")
    stock(2, days=3, pool="empty")  # too old to hand out
    assert run("claim", "nps", "--recipient", "cust-1").exit_code == 0


def test_status_json_shape_and_health(run, stocked) -> None:
    result = run("status", "--json")

    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert set(report) == {"pools"}
    assert set(report["pools"]) == {"nps", "low", "empty"}
    for entry in report["pools"].values():
        assert set(entry) == STATUS_KEYS
        numbers = STATUS_KEYS - {"health", "lists", "response_rate"}
        assert all(isinstance(entry[key], int) for key in numbers)
        assert all(list_id.startswith("CG_") for list_id in entry["lists"])
    nps, low, empty = (report["pools"][name] for name in ("nps", "low", "empty"))
    assert (nps["claimable"], nps["available"], nps["claimed"], nps["health"]) == (6, 6, 1, "OK")
    assert (low["claimable"], low["health"]) == (3, "LOW")
    assert (empty["claimable"], empty["available"], empty["too_old"]) == (0, 2, 2)
    assert empty["health"] == "EMPTY"
    assert nps["claimed_24h"] == 1
    assert len(nps["lists"]) == 1
    assert (nps["low_water"], nps["target_available"]) == (5, 10)
    assert (nps["answered"], nps["response_rate"], nps["responses_on_unclaimed_links"]) == (0, 0, 0)
    assert low["response_rate"] is None  # nothing claimed: no rate


def test_status_claimed_24h_forgets_old_claims(run, stocked, clock: ManualClock) -> None:
    clock.advance(timedelta(hours=25))

    nps = json.loads(run("status", "--json").stdout)["pools"]["nps"]

    assert (nps["claimed"], nps["claimed_24h"]) == (1, 0)


def test_status_table(run, stocked) -> None:
    result = run("status")

    assert result.exit_code == 0, result.output
    header, rule, *rows = result.stdout.splitlines()
    assert header.split() == [
        "pool", "claimable", "too", "old", "claimed", "24h", "claimed", "lists", "sync", "due",
        "answered", "rate", "unclaimed", "resp.", "health",
    ]  # fmt: skip
    assert set(rule) <= {"-", " "}
    by_pool = {row.split()[0]: row.split() for row in rows}
    assert by_pool["nps"] == ["nps", "6", "0", "1", "1", "1", "1", "0", "0%", "0", "OK"]
    assert by_pool["low"][1] == "3" and by_pool["low"][-1] == "LOW"
    assert by_pool["empty"][1:3] == ["0", "2"] and by_pool["empty"][-1] == "EMPTY"


def test_status_without_pools(tmp_path: Path, run, sqlite_url: str) -> None:
    path = tmp_path / "nopools.toml"
    path.write_text(f'[database]\nurl = "{sqlite_url}"\n', encoding="utf-8")

    assert run("status", "--json", path=path).stdout.strip() == '{\n  "pools": {}\n}'
    assert "no pools configured" in run("status", path=path).stdout


def test_docs_status_md_documents_every_key() -> None:
    doc = (ROOT / "docs" / "status.md").read_text(encoding="utf-8")

    documented = set(re.findall(r"^\| `([a-z_0-9]+)` \|", doc, flags=re.MULTILINE))

    assert documented == STATUS_KEYS | {"pools"}


# --- export -------------------------------------------------------------------------------


@pytest.fixture
def claimed(run, stock, store: Store, clock: ManualClock) -> list[dict]:
    """Two claims from two lists of nps; the second list is then marked deleted."""
    stock(1)
    first = json.loads(run("claim", "nps", "--recipient", "a", "--key", "k1", "--json").stdout)
    clock.advance(timedelta(minutes=1))
    stock(1)
    second = run("claim", "nps", "--recipient", "b", "--data", '{"store": "12"}', "--json")
    _, deleted = store.lists_in_states(["ready"], pool="nps")
    store.update_list(deleted.id, now=clock.now(), state="deleted")
    stock(2, pool="low")
    run("claim", "low", "--recipient", "elsewhere")
    return [first, json.loads(second.stdout)]


def test_export_csv_to_stdout(run, claimed: list[dict]) -> None:
    result = run("export", "nps")

    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [row["recipient"] for row in rows] == ["a", "b"]
    assert [row["url"] for row in rows] == [claim["url"] for claim in claimed]
    assert rows[0]["key"] == "k1"
    assert rows[1]["key"] == ""
    assert json.loads(rows[1]["data"]) == {"store": "12"}
    assert rows[0]["claimed_at"] == claimed[0]["claimed_at"]
    assert rows[0]["expires_at"] == claimed[0]["expires_at"]
    assert rows[0]["contact_id"] == claimed[0]["contact_id"]
    assert rows[0]["mailing_list_id"].startswith("CG_")
    assert rows[0]["distribution_id"].startswith("EMD_")
    assert rows[0]["survey_id"] == SURVEY_ID


def test_export_json_to_a_file(run, claimed: list[dict], tmp_path: Path) -> None:
    output = tmp_path / "claims.json"

    result = run("export", "nps", "--format", "json", "--output", str(output))

    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert "exported 2 claim(s)" in result.stderr
    records = json.loads(output.read_text(encoding="utf-8"))
    assert [record["recipient"] for record in records] == ["a", "b"]
    assert records[1]["data"] == {"store": "12"}
    assert records[0]["key"] == "k1"
    assert {record["url"] for record in records} == {claim["url"] for claim in claimed}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".claims.json")] == []


def test_export_csv_to_a_file_matches_stdout(run, claimed: list[dict], tmp_path: Path) -> None:
    output = tmp_path / "claims.csv"

    assert run("export", "nps", "--output", str(output)).exit_code == 0

    assert output.read_text(encoding="utf-8") == run("export", "nps").stdout


def test_export_json_of_a_pool_without_claims(run) -> None:
    result = run("export", "empty", "--format", "json")

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == []


def test_export_unknown_pool_exits_2(run) -> None:
    line = assert_clean_failure(run("export", "nope"), 2)

    assert "'nope'" in line


def test_export_json_to_stdout_matches_the_file(run, claimed: list[dict], tmp_path: Path) -> None:
    output = tmp_path / "claims.json"
    run("export", "nps", "--format", "json", "--output", str(output))

    result = run("export", "nps", "--format", "json")

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == json.loads(output.read_text(encoding="utf-8"))
    assert len(json.loads(result.stdout)) == 2


def test_export_into_a_missing_directory_exits_1(run, claimed: list[dict], tmp_path: Path) -> None:
    output = tmp_path / "no-such-directory" / "claims.csv"

    line = assert_clean_failure(run("export", "nps", "--output", str(output)), 1)

    assert f"cannot write {output}" in line
