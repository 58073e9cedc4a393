"""``linkpool doctor`` against the simulator: what it finds, its JSON and exit codes, and that
it only reads."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from linkpool.cli import App, main
from linkpool.clock import ManualClock
from linkpool.qualtrics.endpoints import MAILING_LIST_LISTING_CAP
from linkpool.simulator import Simulator
from linkpool.simulator.fidelity import Fidelity
from linkpool.simulator.state import MailingList

SURVEY = "SV_SimSurvey0001"
OTHER_SURVEY = "SV_SimSurvey0002"


def make_cli(tmp_path: Path, sqlite_url: str, sim: Simulator, clock: ManualClock):
    config = tmp_path / "linkpool.toml"
    config.write_text(
        f'[database]\nurl = "{sqlite_url}"\n\n'
        f'[qualtrics]\nbase_url = "{sim.base_url}"\ndirectory_id = "{sim.directory_id}"\n\n'
        f'[pools.nps]\nsurvey_id = "{SURVEY}"\n\n'
        f'[pools.off]\nsurvey_id = "{OTHER_SURVEY}"\n'
    )

    env = {"QUALTRICS_API_TOKEN": sim.token}

    def invoke(*args: str) -> Result:
        app = App(str(config), clock=clock, transport=sim.transport())
        return CliRunner().invoke(main, ["--config", str(config), *args], obj=app, env=env)

    return invoke


def simulator(clock: ManualClock, **fidelity: object) -> Simulator:
    return Simulator(clock=clock, surveys=(SURVEY, OTHER_SURVEY), fidelity=Fidelity(**fidelity))


@pytest.fixture
def sim(clock: ManualClock) -> Simulator:
    return simulator(clock)


@pytest.fixture
def cli(tmp_path: Path, sqlite_url: str, sim: Simulator, clock: ManualClock):
    return make_cli(tmp_path, sqlite_url, sim, clock)


def checks(result: Result) -> dict[str, dict[str, str]]:
    return {check["check"]: check for check in json.loads(result.output)["checks"]}


def test_a_healthy_brand_passes_every_check(cli: Callable[..., Result], sim: Simulator) -> None:
    result = cli("doctor", "--json")

    assert result.exit_code == 0, result.output
    found = checks(result)
    assert {check["status"] for check in found.values()} == {"ok"}
    assert list(found) == ["whoami", "directory", "survey of pool nps", "survey of pool off"]
    assert sim.brand.user_id in found["whoami"]["found"]
    assert "shows 0 mailing list(s) of the 10,000" in found["directory"]["found"]
    assert "active" in found["survey of pool nps"]["found"]
    assert {key.split()[0] for key in sim.calls} == {"GET"}  # reads only


def test_the_table_names_each_check(cli: Callable[..., Result]) -> None:
    result = cli("doctor")
    assert result.exit_code == 0
    assert result.output.splitlines()[0].split() == ["check", "status", "found"]
    assert "survey of pool off" in result.output


def test_an_inactive_survey_fails_and_the_other_checks_still_run(
    cli: Callable[..., Result], sim: Simulator
) -> None:
    sim.set_survey_active(OTHER_SURVEY, False)
    result = cli("doctor", "--json")
    assert result.exit_code == 1
    found = checks(result)
    assert found["survey of pool off"]["status"] == "fail"
    assert "not active" in found["survey of pool off"]["found"]
    assert found["survey of pool nps"]["status"] == "ok"
    assert json.loads(result.output)["ok"] is False


def test_an_unknown_survey_fails_with_qualtrics_answer(
    cli: Callable[..., Result], sim: Simulator
) -> None:
    del sim.brand.surveys[OTHER_SURVEY]
    found = checks(cli("doctor", "--json"))
    assert found["survey of pool off"]["status"] == "fail"
    assert "404" in found["survey of pool off"]["found"]


def test_a_wrong_datacenter_fails_naming_the_right_base_url(
    tmp_path: Path, sqlite_url: str, clock: ManualClock
) -> None:
    sim = simulator(clock, proxied_to="sjc1.qualtrics.com")
    result = make_cli(tmp_path, sqlite_url, sim, clock)("doctor", "--json")
    assert result.exit_code == 1
    whoami = checks(result)["whoami"]
    assert whoami["status"] == "fail"
    assert "https://sjc1.qualtrics.com/API/v3" in whoami["found"]


def test_another_notice_is_a_warning(tmp_path: Path, sqlite_url: str, clock: ManualClock) -> None:
    sim = simulator(clock, notice="Scheduled maintenance tonight.")
    result = make_cli(tmp_path, sqlite_url, sim, clock)("doctor", "--json")
    assert result.exit_code == 0
    assert checks(result)["whoami"]["status"] == "warn"
    assert "Scheduled maintenance tonight." in checks(result)["whoami"]["found"]


@pytest.mark.parametrize(
    ("lists", "status", "exit_code"),
    [(MAILING_LIST_LISTING_CAP - 100, "ok", 0), (MAILING_LIST_LISTING_CAP - 99, "warn", 0),
     (MAILING_LIST_LISTING_CAP + 5, "fail", 1)],
)  # fmt: skip
def test_the_list_count_against_the_ceiling(
    cli: Callable[..., Result], sim: Simulator, lists: int, status: str, exit_code: int
) -> None:
    now = sim.clock.now()
    for index in range(lists):
        mailing_list = MailingList(f"CG_seed{index:010d}", f"other/{index}", "UR_x", now, now)
        sim.brand.mailing_lists[mailing_list.id] = mailing_list
    result = cli("doctor", "--json")
    assert result.exit_code == exit_code
    directory = checks(result)["directory"]
    assert directory["status"] == status
    assert f"{min(lists, MAILING_LIST_LISTING_CAP):,} mailing list(s)" in directory["found"]


def test_a_wrong_token_fails_every_check_in_one_line_each(
    tmp_path: Path, sqlite_url: str, clock: ManualClock
) -> None:
    sim = simulator(clock)
    cli = make_cli(tmp_path, sqlite_url, sim, clock)
    sim.token = "rotated-token"  # the brand no longer takes the token linkpool has
    result = cli("doctor", "--json")
    assert result.exit_code == 1
    assert {check["status"] for check in checks(result).values()} == {"fail"}
    assert "sim-token" not in result.output
    assert "Traceback" not in result.output
