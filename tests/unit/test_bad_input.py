"""Bad input through the ``linkpool`` command, one case each (issue 6).

Every case checks the same contract: the documented exit code, exactly one line on stderr
naming the problem and the fix, no traceback, nothing half-written (no new rows in ``lists`` or
``links``, no live mailing list left on the simulator) and the API token nowhere in the output.
Qualtrics is the simulator, in-process, mounted on the CLI's client through ``App.transport``.

Cases already covered in ``test_cli.py`` (unknown pool for claim/export, the basic ``--data``
mistakes, an unmigrated database for status/claim/export) and ``test_config.py`` (each parser
rule) are not repeated; here they are driven through the commands that talk to Qualtrics.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result

from linkpool import config
from linkpool.cli import App, main
from linkpool.clock import ManualClock
from linkpool.lease import Lease
from linkpool.simulator import Simulator
from linkpool.store import Store
from tests.conftest import SeedLinks

TOKEN = "tok-SECRET-7f3a9c2e"
WRONG_TOKEN = "tok-WRONG-51d0b8aa"
TOKEN_ENV = "LINKPOOL_TEST_TOKEN"
SURVEY = "SV_SimSurvey0001"
DIRECTORY = "POOL_SimDirectory01"

Run = Callable[..., Result]


def config_text(
    database_url: str,
    *,
    base_url: str,
    survey_id: str = SURVEY,
    directory_id: str = DIRECTORY,
) -> str:
    return f"""
[database]
url = "{database_url}"

[qualtrics]
base_url = "{base_url}"
directory_id = "{directory_id}"
api_token_env = "{TOKEN_ENV}"
max_retries = 2

[pools.nps]
survey_id = "{survey_id}"
target_available = 20
low_water = 10
list_size = 20
"""


class UnreachableElsewhere(httpx.BaseTransport):
    """The simulator for its own host; a connection error for any other (a wrong datacenter)."""

    def __init__(self, simulator: Simulator) -> None:
        self.host = httpx.URL(simulator.base_url).host
        self.inner = simulator.transport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.host != self.host:
            raise httpx.ConnectError(f"[Errno -2] Name or service not known: {request.url.host}")
        return self.inner.handle_request(request)


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(config.CONFIG_ENV, raising=False)
    monkeypatch.delenv(config.DATABASE_URL_ENV, raising=False)
    monkeypatch.setenv(TOKEN_ENV, TOKEN)


@pytest.fixture
def simulator(clock: ManualClock) -> Simulator:
    sim = Simulator(token=TOKEN, directory_id=DIRECTORY, surveys=[SURVEY], clock=clock)
    sim.add_survey("SV_Inactive000001", active=False)
    return sim


@pytest.fixture
def write_config(tmp_path: Path, sqlite_url: str, simulator: Simulator) -> Callable[..., Path]:
    def write(text: str | None = None, **options: str) -> Path:
        path = tmp_path / "linkpool.toml"
        options.setdefault("base_url", simulator.base_url)
        path.write_text(text or config_text(sqlite_url, **options), encoding="utf-8")
        return path

    return write


@pytest.fixture
def run(write_config: Callable[..., Path], simulator: Simulator, clock: ManualClock) -> Run:
    """``linkpool ARGS`` with the test clock and the simulator behind the Qualtrics client."""

    def invoke(*args: str, path: Path | None = None) -> Result:
        app = App(
            str(path or write_config()), clock=clock, transport=UnreachableElsewhere(simulator)
        )
        return CliRunner().invoke(main, list(args), obj=app)

    return invoke


def row_counts(url: str) -> tuple[int, int]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            lists = connection.execute(sa.text("SELECT count(*) FROM lists")).scalar_one()
            links = connection.execute(sa.text("SELECT count(*) FROM links")).scalar_one()
    finally:
        engine.dispose()
    return lists, links


def assert_one_clean_line(result: Result, exit_code: int) -> str:
    """The documented exit code, one line on stderr, no traceback, no token. Returns the line."""
    assert result.exit_code == exit_code, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    everything = result.stdout + result.stderr
    assert "Traceback" not in everything
    assert TOKEN not in everything
    assert WRONG_TOKEN not in everything
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


# --- configuration --------------------------------------------------------------------------


def test_malformed_toml_exits_2_naming_the_file(run: Run, write_config, simulator) -> None:
    path = write_config('[pools.nps\nsurvey_id = "SV_SimSurvey0001"\n')

    line = assert_one_clean_line(run("refill", path=path), 2)

    assert str(path) in line
    assert "not valid TOML" in line
    assert not simulator.calls


@pytest.mark.parametrize(
    ("mistake", "key"),
    [
        ({"low_water = 10": "low_water = 30"}, "pools.nps.low_water"),
        ({"list_size = 20": "list_size = 10001"}, "pools.nps.list_size"),
        ({"list_size = 20": 'list_size = "20"'}, "pools.nps.list_size"),
        ({"list_size = 20": 'list_size = 20\nmin_remaining = "60d"'}, "pools.nps.min_remaining"),
        ({"list_size = 20": 'list_size = 20\nlink_ttl = "60 days"'}, "pools.nps.link_ttl"),
        ({"list_size = 20": "list_size = 20\ncolour = 1"}, "pools.nps.colour"),
        ({f'"{SURVEY}"': '"SIM-SURVEY"'}, "pools.nps.survey_id"),
        ({f'"{DIRECTORY}"': '"DIR_1"'}, "qualtrics.directory_id"),
        ({"max_retries = 2": "max_retries = -1"}, "qualtrics.max_retries"),
        ({"max_retries = 2": 'datacenter = "iad1"'}, "qualtrics.datacenter"),
        (
            {f'api_token_env = "{TOKEN_ENV}"': f'api_token_env = "{TOKEN}"'},
            "qualtrics.api_token_env",
        ),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_invalid_config_value_exits_2_naming_file_and_key(
    run: Run, write_config, simulator, sqlite_url: str, mistake: dict[str, str], key: str
) -> None:
    text = config_text(sqlite_url, base_url=simulator.base_url)
    for old, new in mistake.items():
        assert old in text
        text = text.replace(old, new, 1)
    path = write_config(text)

    line = assert_one_clean_line(run("refill", path=path), 2)

    assert str(path) in line
    assert key in line
    assert row_counts(sqlite_url) == (0, 0)
    assert not simulator.calls


def test_missing_token_variable_exits_2_naming_the_variable(
    run: Run, monkeypatch: pytest.MonkeyPatch, simulator, sqlite_url: str
) -> None:
    monkeypatch.delenv(TOKEN_ENV)

    for command in ("refill", "gc", "sync"):
        line = assert_one_clean_line(run(command), 2)
        assert TOKEN_ENV in line
        assert "set the environment variable" in line
    assert row_counts(sqlite_url) == (0, 0)
    assert not simulator.calls


# --- Qualtrics refusing or unreachable ------------------------------------------------------


def test_wrong_token_exits_1_saying_to_check_the_token(
    run: Run, monkeypatch: pytest.MonkeyPatch, simulator, sqlite_url: str
) -> None:
    monkeypatch.setenv(TOKEN_ENV, WRONG_TOKEN)

    line = assert_one_clean_line(run("refill"), 1)

    assert "refused the API token" in line
    assert "api_token_env" in line
    assert row_counts(sqlite_url) == (0, 0)
    assert simulator.mailing_lists() == {}


def test_wrong_datacenter_exits_1_saying_qualtrics_is_unreachable(
    run: Run, write_config, simulator, sqlite_url: str
) -> None:
    path = write_config(base_url="https://zz9.qualtrics.com/API/v3")

    line = assert_one_clean_line(run("refill", path=path), 1)

    assert "cannot be reached" in line
    assert "base_url or datacenter" in line
    assert row_counts(sqlite_url) == (0, 0)
    assert not simulator.calls


def test_unknown_directory_exits_1_naming_directory_id(
    run: Run, write_config, simulator, sqlite_url: str
) -> None:
    path = write_config(directory_id="POOL_NotOurDirectory")

    line = assert_one_clean_line(run("refill", path=path), 1)

    assert "directory_id" in line
    assert "POOL_NotOurDirectory" in line
    assert row_counts(sqlite_url) == (0, 0)
    assert simulator.mailing_lists() == {}


@pytest.mark.parametrize(
    ("survey_id", "said"),
    [("SV_NoSuchSurvey01", "Survey not found"), ("SV_Inactive000001", "is not active")],
    ids=["unknown", "inactive"],
)
def test_unusable_survey_exits_1_on_every_run_and_leaves_nothing_behind(
    run: Run, write_config, simulator, sqlite_url: str, survey_id: str, said: str
) -> None:
    """Issue 11 point 4: each run used to import list_size contacts before the distribution
    was refused, and they stayed in the directory. The survey is checked before anything."""
    path = write_config(survey_id=survey_id)

    for _ in range(5):
        line = assert_one_clean_line(run("refill", path=path), 1)
        assert "nps" in line
        assert survey_id in line
        assert said in line
        assert "survey_id" in line

    assert simulator.contact_ids() == []
    assert simulator.mailing_lists() == {}
    assert row_counts(sqlite_url) == (0, 0)
    assert simulator.calls["POST /directories/{directoryId}/mailinglists"] == 0
    assert simulator.calls["GET /surveys/{surveyId}"] == 5  # once a run


# --- the database ---------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["status", "refill", "db"])
def test_database_that_does_not_connect_exits_1(
    run: Run, write_config, simulator, command: str
) -> None:
    path = write_config(
        config_text("postgresql://nobody@127.0.0.1:1/x", base_url=simulator.base_url)
    )
    args = ("db", "upgrade") if command == "db" else (command,)

    line = assert_one_clean_line(run(*args, path=path), 1)

    assert "database" in line
    assert "check [database] url" in line
    assert not simulator.calls


@pytest.mark.parametrize("command", ["status", "db"])
def test_a_file_that_is_not_a_database_exits_1(
    run: Run, write_config, simulator, tmp_path: Path, command: str
) -> None:
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database file, " * 400)
    path = write_config(config_text(f"sqlite:///{garbage}", base_url=simulator.base_url))
    args = ("db", "upgrade") if command == "db" else (command,)

    line = assert_one_clean_line(run(*args, path=path), 1)

    assert "not a database" in line
    assert "check [database] url" in line


def test_an_unsupported_database_url_exits_1_naming_the_backend(
    run: Run, write_config, simulator
) -> None:
    path = write_config(config_text("oracle2://scott@db/x", base_url=simulator.base_url))

    line = assert_one_clean_line(run("status", path=path), 1)

    assert "'oracle2' is not a supported database" in line


@pytest.mark.parametrize("command", ["refill", "gc", "sync"])
def test_unmigrated_database_exits_1_before_calling_qualtrics(
    run: Run, write_config, simulator, tmp_path: Path, command: str
) -> None:
    url = f"sqlite:///{tmp_path / 'unmigrated.db'}"
    path = write_config(config_text(url, base_url=simulator.base_url))

    line = assert_one_clean_line(run(command, path=path), 1)

    assert "linkpool db upgrade" in line
    assert not simulator.calls


@pytest.mark.parametrize("fmt", ["csv", "json"])
@pytest.mark.parametrize("database", ["unmigrated", "garbage"])
def test_export_from_a_database_it_cannot_read_exits_1_and_writes_no_file(
    run: Run, write_config, simulator, tmp_path: Path, database: str, fmt: str
) -> None:
    """The CSV export reads through the bare driver: its errors are the same clean line."""
    file = tmp_path / f"{database}.db"
    if database == "garbage":
        file.write_bytes(b"not a database file, " * 400)
    path = write_config(config_text(f"sqlite:///{file}", base_url=simulator.base_url))
    output = tmp_path / f"claims.{fmt}"

    line = assert_one_clean_line(
        run("export", "nps", "--format", fmt, "--output", str(output), path=path), 1
    )

    assert ("linkpool db upgrade" if database == "unmigrated" else "not a database") in line
    assert not output.exists() and not list(tmp_path.glob("claims*"))


def test_the_csv_export_of_an_unmigrated_store_asks_for_db_upgrade(tmp_path: Path) -> None:
    from linkpool.db import create_engine
    from linkpool.errors import SchemaNotMigrated
    from linkpool.store import Store

    engine = create_engine(f"sqlite:///{tmp_path / 'unmigrated.db'}")
    written: list[str] = []
    try:
        with pytest.raises(SchemaNotMigrated):
            Store(engine).copy_csv("nps", None, written.append)
    finally:
        engine.dispose()
    assert written == []


# --- claim and pool names -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ('{"score": NaN}', "not JSON-serialisable"),
        ("{'single': 'quotes'}", "not valid JSON"),
        (json.dumps({"blob": "é" * (40 * 1024)}, ensure_ascii=False), "64 KiB"),
        ('{"a":' * 100_000 + "1" + "}" * 100_000, "nested too deeply"),
        ('{"n": ' + "9" * 5000 + "}", "not valid JSON"),
        ('{"a":' * 40 + "1" + "}" * 40, "nested deeper than 32"),
        ('{"t": "\\ud800"}', "not valid Unicode"),
    ],
    ids=["nan", "python-dict", "oversized-in-bytes", "very-deep", "huge-int", "deep", "surrogate"],
)
def test_claim_data_that_is_not_json_or_too_big_exits_2_claiming_nothing(
    run: Run,
    store: Store,
    seed: SeedLinks,
    clock: ManualClock,
    sqlite_url: str,
    data: str,
    message: str,
) -> None:
    seed(store, "nps", 3, now=clock.now(), expires_at=clock.now() + timedelta(days=30))

    line = assert_one_clean_line(run("claim", "nps", "--recipient", "cust-1", "--data", data), 2)

    assert "--data" in line or "data" in line
    assert message in line
    assert store.counts("nps", clock.now(), timedelta(0)).claimed == 0


@pytest.mark.parametrize(
    "options",
    [("--recipient", "cust\x00-1"), ("--recipient", "cust\udcff"), ("--key", "k\x00")],
    ids=["nul-recipient", "undecodable-recipient", "nul-key"],
)
def test_claim_text_a_database_cannot_store_exits_2_claiming_nothing(
    run: Run, store: Store, seed: SeedLinks, clock: ManualClock, options: tuple[str, str]
) -> None:
    seed(store, "nps", 3, now=clock.now(), expires_at=clock.now() + timedelta(days=30))
    args = ["claim", "nps", "--recipient", "cust-1", *options]

    line = assert_one_clean_line(run(*args), 2)

    assert "NUL character" in line or "not valid Unicode" in line
    assert store.counts("nps", clock.now(), timedelta(0)).claimed == 0


@pytest.mark.parametrize("pool", ["nope", ""], ids=["unknown", "empty"])
def test_refill_pool_naming_no_pool_exits_2_listing_the_pools(
    run: Run, simulator, sqlite_url: str, pool: str
) -> None:
    for args in (("refill", "--pool", pool), ("refill", "--dry-run", "--pool", pool)):
        line = assert_one_clean_line(run(*args), 2)
        assert f"unknown pool {pool!r}" in line
        assert "configured pools: nps" in line
    assert row_counts(sqlite_url) == (0, 0)
    assert not simulator.calls


# --- honest reports (issue 11 points 11 and 12) ---------------------------------------------


@pytest.mark.parametrize("command", ["gc", "sync"])
def test_gc_and_sync_with_a_wrong_token_fail_even_with_nothing_to_do(
    run: Run, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    monkeypatch.setenv(TOKEN_ENV, WRONG_TOKEN)

    line = assert_one_clean_line(run(command), 1)

    assert "refused the API token" in line


@pytest.mark.parametrize("command", ["gc", "sync"])
def test_gc_and_sync_with_qualtrics_unreachable_fail_even_with_nothing_to_do(
    run: Run, write_config, command: str
) -> None:
    path = write_config(base_url="https://zz9.qualtrics.com/API/v3")

    line = assert_one_clean_line(run(command, path=path), 1)

    assert "cannot be reached" in line


@pytest.mark.parametrize("command", ["gc", "sync"])
@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_gc_and_sync_already_running_say_so_without_error_and_exit_0(
    run: Run, store: Store, clock: ManualClock, command: str, as_json: bool
) -> None:
    running = Lease(store, command, clock)  # a live holder: it renews its lease
    assert running.acquire()
    running.start_heartbeat()
    try:
        result = run(command, *(["--json"] if as_json else []))
    finally:
        running.stop_heartbeat()
        running.release()

    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    assert "error" not in result.stderr
    if as_json:
        document = json.loads(result.stdout)
        assert document["skipped"] == "already running"
        assert "held by host" in document["holder"]
    else:
        assert "already running" in result.stderr and "held by host" in result.stderr


def test_a_failed_write_back_is_printed_once(
    run: Run, store: Store, seed: SeedLinks, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seeded placeholders are unknown to the simulator: each write-back is refused (404).

    Without pytest's log handlers, as on a terminal: the library's warnings must not reach
    stderr beside the command's own line (Python's last-resort handler would print them)."""
    monkeypatch.setattr(logging.getLogger(), "handlers", [])
    seed(store, "nps", 2, now=clock.now(), expires_at=clock.now() + timedelta(days=30))
    assert run("claim", "nps", "--recipient", "cust-1").exit_code == 0

    result = run("sync")

    assert result.exit_code == 1, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("linkpool: sync: ")


def test_a_pool_level_refill_error_keeps_the_claimable_figure(
    run: Run, store: Store, seed: SeedLinks, clock: ManualClock, write_config, monkeypatch
) -> None:
    """A pool that fails midway still has its links: `claimable 5 -> 5`, not `-> 0`."""
    monkeypatch.setattr(logging.getLogger(), "handlers", [])
    seed(store, "nps", 5, now=clock.now(), expires_at=clock.now() + timedelta(days=30))

    def refuse(self: object, *args: object, **kwargs: object) -> None:
        raise RuntimeError("provisioning broke")

    monkeypatch.setattr("linkpool.refill.machine.PoolRefill._refill", refuse)

    result = run("refill", "--json")

    assert result.exit_code == 1
    pool = json.loads(result.stdout)["pools"]["nps"]
    assert (pool["claimable_before"], pool["claimable_after"]) == (5, 5)
    assert pool["errors"] == ["RuntimeError: provisioning broke"]
    # stdout has the report; stderr the error, once (no log record repeats it)
    assert result.stderr.splitlines() == ["linkpool: refill: nps: RuntimeError: provisioning broke"]


# --- others (issue 11 point 10) -------------------------------------------------------------


def test_db_upgrade_to_a_revision_that_does_not_exist_exits_2(run, sqlite_url: str) -> None:
    line = assert_one_clean_line(run("db", "upgrade", "--revision", "bogus"), 2)

    assert "unknown revision 'bogus'" in line


@pytest.mark.parametrize(
    "command", [("db", "upgrade"), ("status",), ("claim", "nps", "--recipient", "a")]
)
def test_a_database_newer_than_this_linkpool_says_so(
    run, sqlite_url: str, command: tuple[str, ...]
) -> None:
    engine = sa.create_engine(sqlite_url)
    with engine.begin() as connection:
        connection.execute(sa.text("UPDATE alembic_version SET version_num = '9999_future'"))
    engine.dispose()

    line = assert_one_clean_line(run(*command), 1)

    assert "this database is newer than this linkpool" in line
    assert "db upgrade" not in line


def test_export_to_a_full_disk_exits_1_and_leaves_no_file(
    run, store: Store, seed: SeedLinks, clock: ManualClock, tmp_path: Path, monkeypatch
) -> None:
    import errno

    seed(store, "nps", 2, now=clock.now(), expires_at=clock.now() + timedelta(days=30))
    assert run("claim", "nps", "--recipient", "cust-1").exit_code == 0

    def full(store: Store, pool: str, stream, fmt: str, *filters, **more_filters) -> int:
        stream.write("claimed_at,recipient\n")  # part of it got written before the disk filled
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("linkpool.export.write_claims", full)
    target = tmp_path / "out" / "claims.csv"
    target.parent.mkdir()

    line = assert_one_clean_line(run("export", "nps", "--output", str(target)), 1)

    assert f"cannot write {target}: No space left on device" in line
    assert list(target.parent.iterdir()) == []


def test_export_to_a_full_stdout_exits_1(
    run, store: Store, seed: SeedLinks, clock: ManualClock, monkeypatch
) -> None:
    import errno

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("linkpool.cli.ledger.write_claims", full)

    line = assert_one_clean_line(run("export", "nps"), 1)

    assert "cannot write the export to stdout: No space left on device" in line


@pytest.mark.parametrize("port", ["70000", "-1"])
def test_simulator_on_a_port_out_of_range_is_a_usage_error(port: str) -> None:
    result = CliRunner().invoke(main, ["simulator", "--port", port])

    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert "0<=x<=65535" in result.output


def test_simulator_on_a_port_in_use_exits_1_with_one_line() -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        result = CliRunner().invoke(main, ["simulator", "--port", str(port)])

    line = assert_one_clean_line(result, 1)
    assert f"cannot listen on loopback:{port}" in line
