"""What operators asked for (issue 11): `status POOL` says why a pool is where it is, `claims`
finds the claims of one recipient or key, `claim --sync` writes back at once."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from linkpool import config
from linkpool.cli import App, main
from linkpool.clock import ManualClock
from linkpool.models import ListState
from linkpool.simulator import Simulator
from linkpool.store import Store
from tests.conftest import SURVEY_ID, SeedLinks

TOKEN = "tok-OPERATOR-3c1d"
TOKEN_ENV = "LINKPOOL_TEST_TOKEN"
DIRECTORY = "POOL_SimDirectory01"
DAY = timedelta(days=1)


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(config.CONFIG_ENV, raising=False)
    monkeypatch.delenv(config.DATABASE_URL_ENV, raising=False)
    monkeypatch.setenv(TOKEN_ENV, TOKEN)


@pytest.fixture
def simulator(clock: ManualClock) -> Simulator:
    return Simulator(token=TOKEN, directory_id=DIRECTORY, surveys=[SURVEY_ID], clock=clock)


@pytest.fixture
def run(tmp_path: Path, sqlite_url: str, simulator: Simulator, clock: ManualClock):
    path = tmp_path / "linkpool.toml"
    path.write_text(
        f'[database]\nurl = "{sqlite_url}"\n\n'
        f'[qualtrics]\nbase_url = "{simulator.base_url}"\ndirectory_id = "{DIRECTORY}"\n'
        f'api_token_env = "{TOKEN_ENV}"\nmax_retries = 0\n\n'
        f'[pools.nps]\nsurvey_id = "{SURVEY_ID}"\ntarget_available = 20\nlow_water = 10\n'
        'list_size = 20\nmin_remaining = "1d"\n',
        encoding="utf-8",
    )

    def invoke(*args: str) -> Result:
        app = App(str(path), clock=clock, transport=simulator.transport())
        return CliRunner().invoke(main, list(args), obj=app)

    return invoke


@pytest.fixture
def stock(store: Store, seed: SeedLinks, clock: ManualClock):
    def add(count: int, days: float = 30) -> list[int]:
        return seed(store, "nps", count, now=clock.now(), expires_at=clock.now() + days * DAY)

    return add


# --- status POOL ----------------------------------------------------------------------------


def test_status_of_a_quiet_pool_says_the_lock_is_free_and_no_refill_succeeded(run) -> None:
    result = run("status", "nps", "--json")

    assert result.exit_code == 0, result.output
    detail = json.loads(result.stdout)["pools"]["nps"]["detail"]
    assert detail == {"refill_lock": None, "last_refill_success": None, "failed_lists": []}
    text = run("status", "nps").stdout
    assert "refill lock: free" in text
    assert "last successful refill: never" in text
    assert "failed lists: none" in text


def test_status_of_a_pool_names_the_lock_holder_the_last_success_and_failed_lists(
    run, store: Store, clock: ManualClock
) -> None:
    started = clock.now()
    store.record_success("refill", "nps", now=started - timedelta(hours=2))
    failed = store.create_list(
        pool="nps", survey_id=SURVEY_ID, name="linkpool/nps/x", size=20, now=started
    )
    store.update_list(
        failed,
        now=started,
        state=ListState.FAILED,
        mailing_list_id="CG_Failed00000001",
        last_error="Qualtrics refused it: the survey is not active",
    )
    store.acquire_lease("refill:nps", "hostA:4242:beef", now=started, ttl=timedelta(minutes=5))

    document = json.loads(run("status", "nps", "--json").stdout)
    text = run("status", "nps").stdout

    detail = document["pools"]["nps"]["detail"]
    assert detail["refill_lock"]["holder"] == "hostA:4242:beef"
    assert detail["refill_lock"]["since"] == started.isoformat()
    assert detail["refill_lock"]["lapsed"] is False
    assert detail["last_refill_success"] == (started - timedelta(hours=2)).isoformat()
    assert detail["failed_lists"] == [
        {
            "list": failed,
            "mailing_list_id": "CG_Failed00000001",
            "state": "failed",
            "at": started.isoformat(),
            "error": "Qualtrics refused it: the survey is not active",
        }
    ]
    assert "held by hostA:4242:beef since" in text
    assert "the survey is not active" in text
    assert set(document["pools"]) == {"nps"}


def test_status_of_an_unknown_pool_exits_2(run) -> None:
    result = run("status", "nope")

    assert result.exit_code == 2
    assert "unknown pool 'nope'" in result.stderr


# --- claims ---------------------------------------------------------------------------------


def test_claims_of_a_recipient_say_which_links_still_open(run, stock, clock) -> None:
    stock(1, days=3)
    stock(1, days=30)
    assert run("claim", "nps", "--recipient", "ann", "--key", "k1").exit_code == 0
    assert run("claim", "nps", "--recipient", "ann", "--key", "k2").exit_code == 0
    assert run("claim", "nps", "--recipient", "bob").exit_code == 3  # none left
    clock.advance(4 * DAY)

    document = json.loads(run("claims", "nps", "--recipient", "ann", "--json").stdout)
    text = run("claims", "nps", "--recipient", "ann").stdout

    assert [(c["key"], c["usable"]) for c in document["claims"]] == [("k1", False), ("k2", True)]
    assert all(c["url"].startswith("https://") for c in document["claims"])
    assert "https://" not in text
    assert text.splitlines()[0].split() == [
        "link", "recipient", "key", "claimed", "(UTC)", "expires", "(UTC)", "usable"
    ]  # fmt: skip


def test_claims_by_key_finds_one_or_none(run, stock) -> None:
    stock(2)
    assert run("claim", "nps", "--recipient", "ann", "--key", "order-1").exit_code == 0

    found = json.loads(run("claims", "nps", "--key", "order-1", "--json").stdout)["claims"]
    missing = run("claims", "nps", "--key", "order-2")

    assert [(c["recipient"], c["usable"]) for c in found] == [("ann", True)]
    assert missing.exit_code == 0
    assert "no claim of key 'order-2'" in missing.stdout


@pytest.mark.parametrize("options", [(), ("--key", "k", "--recipient", "r")], ids=["none", "both"])
def test_claims_needs_exactly_one_of_recipient_and_key(run, options: tuple[str, ...]) -> None:
    result = run("claims", "nps", *options)

    assert result.exit_code == 2
    assert "exactly one of --recipient and --key" in result.output


# --- claim --sync ---------------------------------------------------------------------------


def test_claim_sync_writes_the_recipient_onto_the_contact_before_returning(
    run, simulator: Simulator
) -> None:
    assert run("refill").exit_code == 0

    result = run("claim", "nps", "--recipient", "ann", "--json", "--sync")

    assert result.exit_code == 0, result.output
    claim = json.loads(result.stdout)
    embedded = simulator.contact(claim["contact_id"]).get("embeddedData", {})
    assert embedded.get("linkpool_recipient") == "ann"
    assert result.stderr == ""


def test_claim_sync_with_qualtrics_failing_returns_the_claim_and_leaves_the_write_back(
    run, simulator: Simulator, store: Store
) -> None:
    assert run("refill").exit_code == 0
    simulator.faults.error_rate = 1.0

    result = run("claim", "nps", "--recipient", "ann", "--json", "--sync")

    assert result.exit_code == 0, result.output
    claim = json.loads(result.stdout)
    assert "left for `linkpool sync`" in result.stderr
    assert store.writeback_of(claim["link_id"]).writeback == "pending"
