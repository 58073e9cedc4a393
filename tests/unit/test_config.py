"""Configuration: file resolution, parsing, defaults, and one precise error per mistake."""

from __future__ import annotations

import dataclasses
import re
from datetime import timedelta
from pathlib import Path

import pytest

from linkpool import config
from linkpool.config import (
    GcSettings,
    PoolSettings,
    QualtricsSettings,
    Settings,
    SyncSettings,
    format_duration,
    load_settings,
    normalize_database_url,
    parse_duration,
    resolve_config_path,
)
from linkpool.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config" / "linkpool.example.toml"
DOC = ROOT / "docs" / "configuration.md"

QUALTRICS = """
[qualtrics]
base_url = "https://iad1.qualtrics.com/API/v3"
directory_id = "POOL_TestDirectory01"
"""
POOL = """
[pools.nps]
survey_id = "SV_TestSurvey00001"
"""


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(config.CONFIG_ENV, raising=False)
    monkeypatch.delenv(config.DATABASE_URL_ENV, raising=False)


@pytest.fixture
def write_config(tmp_path: Path):
    def write(text: str, name: str = "linkpool.toml") -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write


def config_error(path: Path) -> str:
    with pytest.raises(ConfigError) as excinfo:
        load_settings(path)
    return str(excinfo.value)


# --- the example file -------------------------------------------------------------------------


def test_example_config_parses_into_the_documented_values() -> None:
    settings = load_settings(EXAMPLE)

    assert settings.source == EXAMPLE
    assert settings.database_url == "sqlite:///linkpool.db"
    assert settings.qualtrics == QualtricsSettings(
        base_url="https://iad1.qualtrics.com/API/v3",
        directory_id="POOL_ExampleDirectory",
        api_token_env="QUALTRICS_API_TOKEN",
        requests_per_minute=3000,
        max_concurrency=4,
        timeout=30.0,
        max_retries=5,
    )
    assert settings.schedule == {}  # the job registry holds the intervals' defaults
    assert settings.gc == GcSettings(grace=timedelta(days=7), purge_contacts=False)
    assert settings.sync == SyncSettings(
        recipient_field="linkpool_recipient", max_attempts=5, contact_fields={}
    )
    assert list(settings.pools) == ["nps-checkin"]
    assert settings.pools["nps-checkin"] == PoolSettings(
        name="nps-checkin",
        survey_id="SV_ExampleSurvey01",
        target_available=500,
        low_water=200,
        list_size=1000,
        link_ttl=timedelta(days=60),
        min_remaining=timedelta(days=7),
        embedded_data={"source": "linkpool"},
    )


def test_an_empty_file_gives_the_defaults(write_config) -> None:
    settings = load_settings(write_config(""))

    assert settings.database_url == config.DEFAULT_DATABASE_URL
    assert settings.qualtrics is None
    assert settings.pools == {}
    assert settings.schedule == {}
    assert settings.gc == GcSettings()
    assert settings.sync == SyncSettings()


def test_require_qualtrics_names_the_file_when_the_table_is_missing(write_config) -> None:
    path = write_config("")
    with pytest.raises(ConfigError, match=re.escape(str(path))):
        load_settings(path).require_qualtrics()


# --- which file -------------------------------------------------------------------------------


def test_config_option_wins_over_environment_and_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(config.CONFIG_ENV, "from-env.toml")

    assert resolve_config_path("explicit.toml") == Path("explicit.toml")


def test_environment_wins_over_working_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(config.CONFIG_ENV, "from-env.toml")

    assert resolve_config_path(None) == Path("from-env.toml")


def test_default_is_linkpool_toml_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "linkpool.toml").write_text('[database]\nurl = "sqlite:///cwd.db"\n')

    assert resolve_config_path(None) == Path("linkpool.toml")
    assert load_settings().database_url == "sqlite:///cwd.db"


def test_load_settings_reads_the_file_named_by_the_environment(
    write_config, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_config('[database]\nurl = "sqlite:///env.db"\n', name="env.toml")
    monkeypatch.setenv(config.CONFIG_ENV, str(path))

    assert load_settings().database_url == "sqlite:///env.db"


# --- database url -----------------------------------------------------------------------------


def test_database_url_environment_variable_overrides_the_file(
    write_config, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(config.DATABASE_URL_ENV, "sqlite:///override.db")

    settings = load_settings(write_config('[database]\nurl = "sqlite:///file.db"\n'))

    assert settings.database_url == "sqlite:///override.db"


def test_a_wrongly_typed_database_url_is_reported_even_when_the_environment_overrides_it(
    write_config, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(config.DATABASE_URL_ENV, "sqlite:///override.db")

    with pytest.raises(ConfigError, match=r"database\.url: must be a string"):
        load_settings(write_config("[database]\nurl = 5\n"))


@pytest.mark.parametrize(
    "url",
    ["postgresql://user@db.example/linkpool", "postgres://user@db.example/linkpool"],
)
def test_postgres_urls_use_psycopg_3(write_config, url: str) -> None:
    settings = load_settings(write_config(f'[database]\nurl = "{url}"\n'))

    assert settings.database_url == "postgresql+psycopg://user@db.example/linkpool"


def test_postgres_url_from_the_environment_uses_psycopg_3(
    write_config, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(config.DATABASE_URL_ENV, "postgres://u@h/d")

    assert load_settings(write_config("")).database_url == "postgresql+psycopg://u@h/d"


@pytest.mark.parametrize(
    "url",
    ["sqlite:///x.db", "postgresql+psycopg://u@h/d", "postgresql+psycopg2://u@h/d"],
)
def test_urls_that_name_their_driver_are_left_alone(url: str) -> None:
    assert normalize_database_url(url) == url


def test_database_url_that_is_not_a_url_is_refused(write_config) -> None:
    path = write_config('[database]\nurl = "linkpool.db"\n')

    message = config_error(path)

    assert str(path) in message
    assert "database.url" in message


# --- qualtrics base url -----------------------------------------------------------------------


def test_datacenter_becomes_the_base_url(write_config) -> None:
    path = write_config('[qualtrics]\ndatacenter = "fra1"\ndirectory_id = "POOL_TestDirectory01"\n')

    assert load_settings(path).qualtrics.base_url == "https://fra1.qualtrics.com/API/v3"


def test_base_url_loses_its_trailing_slash(write_config) -> None:
    path = write_config(QUALTRICS.replace("/API/v3", "/API/v3/"))

    assert load_settings(path).qualtrics.base_url == "https://iad1.qualtrics.com/API/v3"


def test_base_url_and_datacenter_together_are_refused(write_config) -> None:
    path = write_config(QUALTRICS + 'datacenter = "iad1"\n')

    message = config_error(path)

    assert str(path) in message
    assert "qualtrics.datacenter" in message
    assert "not both" in message


def test_neither_base_url_nor_datacenter_is_refused(write_config) -> None:
    path = write_config('[qualtrics]\ndirectory_id = "POOL_TestDirectory01"\n')

    message = config_error(path)

    assert str(path) in message
    assert "base_url or datacenter" in message


def test_malformed_datacenter_is_refused(write_config) -> None:
    path = write_config('[qualtrics]\ndatacenter = "not a dc"\ndirectory_id = "POOL_X123456789"\n')

    assert "qualtrics.datacenter" in config_error(path)


# --- qualtrics list prefix -------------------------------------------------------------------


def test_list_prefix_defaults_to_linkpool(write_config) -> None:
    assert load_settings(write_config(QUALTRICS)).qualtrics.list_prefix == "linkpool"


@pytest.mark.parametrize("prefix", ["staging", "linkpool-staging", "eu_1.prod", "x", "a" * 40])
def test_list_prefix_of_letters_digits_dash_underscore_and_dot_is_accepted(
    write_config, prefix: str
) -> None:
    path = write_config(QUALTRICS + f'list_prefix = "{prefix}"\n')

    assert load_settings(path).qualtrics.list_prefix == prefix


@pytest.mark.parametrize("prefix", ["", "a" * 41, "linkpool/staging", "stag ing", "prod:1", "ü"])
def test_a_list_prefix_out_of_bounds_is_refused(write_config, prefix: str) -> None:
    path = write_config(QUALTRICS + f'list_prefix = "{prefix}"\n')

    message = config_error(path)

    assert message.startswith(f"{path}: qualtrics.list_prefix: "), message
    assert "no '/'" in message


def test_a_list_prefix_that_is_not_a_string_is_refused(write_config) -> None:
    message = config_error(write_config(QUALTRICS + "list_prefix = 5\n"))

    assert "qualtrics.list_prefix: must be a string" in message


def test_qualtrics_settings_built_in_code_check_the_list_prefix_too() -> None:
    with pytest.raises(ConfigError, match="list_prefix"):
        QualtricsSettings(
            base_url="https://iad1.qualtrics.com/API/v3",
            directory_id="POOL_TestDirectory01",
            list_prefix="linkpool/staging",
        )


# --- durations --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        ("5m", timedelta(minutes=5)),
        ("12h", timedelta(hours=12)),
        ("60d", timedelta(days=60)),
        (" 7d ", timedelta(days=7)),
        ("0s", timedelta(0)),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["30", "5w", "1.5h", "-1d", "d", "", "1h30m", "ten s"])
def test_parse_duration_refuses_what_is_not_an_integer_and_one_unit(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_parse_duration_refuses_non_strings() -> None:
    with pytest.raises(ValueError):
        parse_duration(30)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (timedelta(days=60), "60d"),
        (timedelta(hours=36), "36h"),
        (timedelta(minutes=90), "90m"),
        (timedelta(seconds=61), "61s"),
        (timedelta(0), "0s"),
    ],
)
def test_format_duration_uses_the_largest_exact_unit(value: timedelta, text: str) -> None:
    assert format_duration(value) == text
    assert parse_duration(text) == value


def test_bad_duration_unit_names_file_and_key(write_config) -> None:
    path = write_config(POOL + 'link_ttl = "8w"\n')

    message = config_error(path)

    assert str(path) in message
    assert "pools.nps.link_ttl" in message


@pytest.mark.parametrize("key", ["refill_interval", "gc_interval", "sync_interval"])
def test_zero_duration_is_refused(write_config, key: str) -> None:
    path = write_config(f'[schedule]\n{key} = "0s"\n')

    message = config_error(path)

    assert str(path) in message
    assert f"schedule.{key}" in message
    assert "longer than zero" in message


# --- validation: every error names the file and the key ---------------------------------------


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[databases]\nurl = 'sqlite://'\n", "databases"),
        ("[database]\npath = 'x.db'\n", "database.path"),
        (QUALTRICS + "token = 'x'\n", "qualtrics.token"),
        ("[schedule]\nrefill = '5m'\n", "schedule.refill"),
        ("[gc]\npurge = true\n", "gc.purge"),
        ("[sync]\nfield = 'x'\n", "sync.field"),
        (POOL + "size = 10\n", "pools.nps.size"),
        # wrong types: a string for an integer, a boolean for an integer, an integer for a string
        (POOL + "target_available = '500'\n", "pools.nps.target_available"),
        (POOL + "low_water = '200'\n", "pools.nps.low_water"),
        (QUALTRICS + "max_concurrency = true\n", "qualtrics.max_concurrency"),
        (POOL + "list_size = false\n", "pools.nps.list_size"),
        ("[pools.nps]\nsurvey_id = 12\n", "pools.nps.survey_id"),
        ("[database]\nurl = 5\n", "database.url"),
        ("[sync]\nrecipient_field = 1\n", "sync.recipient_field"),
        ("[gc]\npurge_contacts = 1\n", "gc.purge_contacts"),
        (POOL + "link_ttl = 60\n", "pools.nps.link_ttl"),
        (QUALTRICS + "requests_per_minute = 0\n", "qualtrics.requests_per_minute"),
        (QUALTRICS + "max_retries = -1\n", "qualtrics.max_retries"),
        ("[pools]\nnps = 1\n", "pools.nps"),
        ("[pools.'bad name']\nsurvey_id = 'SV_TestSurvey00001'\n", "pools.bad name"),
        # cross-field rules of a pool
        (POOL + "target_available = 100\nlow_water = 101\n", "pools.nps.low_water"),
        (POOL + "list_size = 0\n", "pools.nps.list_size"),
        (POOL + "list_size = 10001\n", "pools.nps.list_size"),
        (POOL + 'link_ttl = "7d"\nmin_remaining = "7d"\n', "pools.nps.min_remaining"),
        (POOL + 'link_ttl = "1d"\nmin_remaining = "2d"\n', "pools.nps.min_remaining"),
        # ids
        ("[pools.nps]\nsurvey_id = 'SV_short'\n", "pools.nps.survey_id"),
        ("[pools.nps]\nsurvey_id = 'XX_TestSurvey00001'\n", "pools.nps.survey_id"),
        (QUALTRICS.replace("POOL_TestDirectory01", "POOL_x"), "qualtrics.directory_id"),
        (
            QUALTRICS.replace("POOL_TestDirectory01", "GRP_TestDirectory01"),
            "qualtrics.directory_id",
        ),
        ("[pools.nps]\nlist_size = 10\n", "pools.nps.survey_id"),
        ("[qualtrics]\ndatacenter = 'iad1'\n", "qualtrics.directory_id"),
        (QUALTRICS + "api_token_env = 'not a name'\n", "qualtrics.api_token_env"),
        # maps of strings
        (POOL + "embedded_data = { source = 1 }\n", "pools.nps.embedded_data.source"),
        (POOL + "embedded_data = { flag = true }\n", "pools.nps.embedded_data.flag"),
        (POOL + "embedded_data = 'source'\n", "pools.nps.embedded_data"),
        ("[sync]\ncontact_fields = { phone = 'phone' }\n", "sync.contact_fields.phone"),
        ("[sync]\ncontact_fields = { email = 3 }\n", "sync.contact_fields.email"),
    ],
)
def test_each_mistake_names_the_file_and_the_key(write_config, text: str, key: str) -> None:
    path = write_config(text)

    message = config_error(path)

    assert message.startswith(f"{path}: {key}"), message


def test_unknown_key_lists_the_allowed_keys(write_config) -> None:
    message = config_error(write_config("[gc]\npurge = true\n"))

    assert "allowed: grace, purge_contacts" in message


def test_boundary_list_sizes_are_accepted(write_config) -> None:
    for size in (1, config.MAX_LIST_SIZE):
        pool = load_settings(write_config(POOL + f"list_size = {size}\n")).pools["nps"]
        assert pool.list_size == size


def test_low_water_equal_to_target_available_is_accepted(write_config) -> None:
    pool = load_settings(write_config(POOL + "target_available = 50\nlow_water = 50\n"))

    assert pool.pools["nps"].low_water == 50


def test_contact_fields_map_contact_fields_to_data_keys(write_config) -> None:
    path = write_config('[sync]\ncontact_fields = { email = "email", firstName = "first" }\n')

    assert load_settings(path).sync.contact_fields == {"email": "email", "firstName": "first"}


def test_pool_settings_built_in_code_are_validated_too() -> None:
    with pytest.raises(ConfigError, match="list_size"):
        PoolSettings(name="nps", survey_id="SV_TestSurvey00001", list_size=0)


# --- unreadable files -------------------------------------------------------------------------


def test_malformed_toml_names_the_file(write_config) -> None:
    path = write_config("[pools.nps\nsurvey_id = 'SV_TestSurvey00001'\n")

    message = config_error(path)

    assert message.startswith(str(path))
    assert "not valid TOML" in message


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"

    message = config_error(path)

    assert message.startswith(str(path))
    assert "not found" in message


def test_a_directory_is_not_a_readable_file(tmp_path: Path) -> None:
    message = config_error(tmp_path)

    assert message.startswith(str(tmp_path))
    assert "cannot read" in message


def test_a_file_that_is_not_utf8_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[database]\nurl = "sqlite:///caf\xe9.db"\n')

    assert config_error(path).startswith(str(path))


# --- the token --------------------------------------------------------------------------------


def test_token_is_read_from_the_named_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_QUALTRICS_TOKEN", "s3cret-token-value")
    settings = QualtricsSettings(
        base_url="https://iad1.qualtrics.com/API/v3",
        directory_id="POOL_TestDirectory01",
        api_token_env="MY_QUALTRICS_TOKEN",
    )

    assert settings.token() == "s3cret-token-value"
    assert "s3cret-token-value" not in repr(settings)


@pytest.mark.parametrize("value", [None, "", "   "])
def test_unset_token_names_the_variable_and_no_token(
    monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    monkeypatch.setenv("QUALTRICS_API_TOKEN", "the-default-variable-token")
    if value is None:
        monkeypatch.delenv("MY_QUALTRICS_TOKEN", raising=False)
    else:
        monkeypatch.setenv("MY_QUALTRICS_TOKEN", value)
    settings = QualtricsSettings(
        base_url="https://iad1.qualtrics.com/API/v3",
        directory_id="POOL_TestDirectory01",
        api_token_env="MY_QUALTRICS_TOKEN",
    )

    with pytest.raises(ConfigError) as excinfo:
        settings.token()

    assert "MY_QUALTRICS_TOKEN" in str(excinfo.value)
    assert "the-default-variable-token" not in str(excinfo.value)


def test_loading_settings_does_not_need_the_token(
    write_config, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("QUALTRICS_API_TOKEN", raising=False)

    settings = load_settings(write_config(QUALTRICS))

    assert settings.qualtrics.api_token_env == "QUALTRICS_API_TOKEN"


# --- [schedule]: job name → interval, only what the file says ---------------------------------


def test_schedule_maps_job_names_to_intervals(write_config) -> None:
    path = write_config('[schedule]\nrefill_interval = "5m"\nresponses_interval = "1h"\n')

    assert load_settings(path).schedule == {
        "refill": timedelta(minutes=5),
        "responses": timedelta(hours=1),
    }


@pytest.mark.parametrize(
    ("text", "key", "said"),
    [
        ('refill = "5m"', "schedule.refill", "<job>_interval"),
        ('Refill_interval = "5m"', "schedule.Refill_interval", "job name"),
        ('"re fill_interval" = "5m"', "schedule.re fill_interval", "job name"),
        ('_interval = "5m"', "schedule._interval", "job name"),
        ('gc_interval = "31d"', "schedule.gc_interval", "at most 30d"),
        ("gc_interval = 60", "schedule.gc_interval", "a duration"),
    ],
)
def test_a_schedule_key_is_a_job_name_and_a_bounded_interval(
    write_config, text: str, key: str, said: str
) -> None:
    path = write_config(f"[schedule]\n{text}\n")

    message = config_error(path)

    assert message.startswith(f"{path}: {key}: "), message
    assert said in message


def test_settings_built_in_code_check_the_schedule() -> None:
    with pytest.raises(ConfigError, match=r"schedule\.refill_interval: must be longer than zero"):
        Settings(schedule={"refill": timedelta(0)})


# --- issue 11 point 8: values that used to crash are one line naming file and key -------------


@pytest.mark.parametrize(
    ("text", "key", "said"),
    [
        # durations that overflow a date or a timeout
        (POOL + 'link_ttl = "999999999999d"\n', "pools.nps.link_ttl", "longer than 3650d"),
        (POOL + 'link_ttl = "3651d"\n', "pools.nps.link_ttl", "longer than 3650d"),
        ('[gc]\ngrace = "366d"\n', "gc.grace", "at most 365d"),
        (QUALTRICS + 'timeout = "31m"\n', "qualtrics.timeout", "at most 30m"),
        # numbers no real deployment means
        (POOL + f"target_available = {2**63 - 1}\n", "pools.nps.target_available", "1000000"),
        (POOL + "low_water = 0\n", "pools.nps.low_water", "between 1 and"),
        (QUALTRICS + "max_concurrency = 1000\n", "qualtrics.max_concurrency", "between 1 and 64"),
        (QUALTRICS + "requests_per_minute = 10000000\n", "qualtrics.requests_per_minute", "100000"),
        (QUALTRICS + "max_retries = 1000\n", "qualtrics.max_retries", "between 0 and 20"),
        ("[sync]\nmax_attempts = 1000\n", "sync.max_attempts", "between 1 and 100"),
        # ids and names with a trailing newline or another control character
        (
            '[qualtrics]\ndatacenter = "iad1\\n"\ndirectory_id = "POOL_TestDirectory01"\n',
            "qualtrics.datacenter",
            "control characters",
        ),
        (
            QUALTRICS.replace("POOL_TestDirectory01", "POOL_TestDirectory01\\n"),
            "qualtrics.directory_id",
            "control characters",
        ),
        ('[pools.nps]\nsurvey_id = "SV_TestSurvey00001\\n"\n', "pools.nps.survey_id", "control"),
        ('[pools."nps\\n"]\nsurvey_id = "SV_TestSurvey00001"\n', "pools.nps\n", "control"),
        (QUALTRICS + 'list_prefix = "linkpool\\n"\n', "qualtrics.list_prefix", "control"),
        (QUALTRICS + 'api_token_env = "TOKEN\\n"\n', "qualtrics.api_token_env", "control"),
        ('[sync]\nrecipient_field = "who\\u0000"\n', "sync.recipient_field", "control"),
        (POOL + 'embedded_data = { "a\\tb" = "x" }\n', "pools.nps.embedded_data.a\tb", "control"),
        (POOL + 'embedded_data = { a = "x\\u007f" }\n', "pools.nps.embedded_data.a", "control"),
        ('[sync]\ncontact_fields = { email = "e\\r" }\n', "sync.contact_fields.email", "control"),
        # malformed URLs
        (
            QUALTRICS.replace("https://iad1.qualtrics.com/API/v3", "https://"),
            "qualtrics.base_url",
            "not a URL",
        ),
        (
            QUALTRICS.replace("iad1.qualtrics.com", "iad1.qualtrics.com:99999"),
            "qualtrics.base_url",
            "port",
        ),
        (
            QUALTRICS.replace("iad1.qualtrics.com", "exa mple.com"),
            "qualtrics.base_url",
            "not a URL",
        ),
        (QUALTRICS.replace("/API/v3", "/API/v3?x=1"), "qualtrics.base_url", "not a URL"),
        (QUALTRICS.replace("https://", "ftp://"), "qualtrics.base_url", "https://"),
        ('[database]\nurl = "postgresql://u:secret@h:abc/d"\n', "database.url", "database URL"),
        ('[database]\nurl = "postgresql://u:secret@h:99999/d"\n', "database.url", "port"),
        ('[database]\nurl = "Post Gres://u:secret@h/d"\n', "database.url", "database URL"),
        ('[database]\nurl = "sqlite:///x.db\\n"\n', "database.url", "control characters"),
        # empty names
        ('[sync]\nrecipient_field = ""\n', "sync.recipient_field", "must not be empty"),
        ('[sync]\nrecipient_field = "' + "r" * 201 + '"\n', "sync.recipient_field", "at most 200"),
        (POOL + 'embedded_data = { "" = "x" }\n', "pools.nps.embedded_data.", "must not be empty"),
        (
            POOL + 'embedded_data = { a = "' + "x" * 1025 + '" }\n',
            "pools.nps.embedded_data.a",
            "1024",
        ),
    ],
)
def test_a_value_no_deployment_means_is_one_line_naming_file_key_and_limit(
    write_config, text: str, key: str, said: str
) -> None:
    path = write_config(text)

    message = config_error(path)

    assert message.startswith(f"{path}: {key}: "), message
    assert said in message.replace(",", "").replace(" 000", "000")
    assert "secret" not in message


def test_a_database_url_from_the_environment_is_checked_and_never_echoed(
    write_config, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(config.DATABASE_URL_ENV, "postgresql://u:secret@h:nope/d")
    path = write_config("")

    message = config_error(path)

    assert message.startswith(f"{path}: database.url: "), message
    assert config.DATABASE_URL_ENV in message
    assert "secret" not in message


def test_the_largest_accepted_values_are_accepted(write_config) -> None:
    pool = (
        POOL + f"target_available = {config.MAX_TARGET_AVAILABLE}\nlow_water = 1\n"
        'link_ttl = "3650d"\nmin_remaining = "3649d"\n'
    )
    settings = load_settings(write_config(pool + '[gc]\ngrace = "365d"\n'))

    assert settings.pools["nps"].target_available == config.MAX_TARGET_AVAILABLE
    assert settings.pools["nps"].link_ttl == timedelta(days=3650)
    assert settings.gc.grace == timedelta(days=365)


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8080/API/v3", "https://iad1.qualtrics.com/API/v3", "http://[::1]:80/API/v3"],
)
def test_base_urls_of_real_hosts_and_loopback_simulators_are_accepted(
    write_config, url: str
) -> None:
    path = write_config(QUALTRICS.replace("https://iad1.qualtrics.com/API/v3", url))

    assert load_settings(path).qualtrics.base_url == url


def test_parse_duration_bounds_what_timedelta_would_overflow_on() -> None:
    with pytest.raises(ValueError, match="longer than 3650d"):
        parse_duration("99999999999d")


# --- validation lives in the settings classes: code and file hit the same rules --------------


@pytest.mark.parametrize(
    ("build", "said"),
    [
        (lambda: GcSettings(grace=timedelta(days=400)), r"\[gc\] grace: must be at most 365d"),
        (lambda: SyncSettings(recipient_field=""), r"\[sync\] recipient_field: must not be empty"),
        (
            lambda: PoolSettings(name="nps", survey_id="SV_TestSurvey00001", low_water=0),
            r"pool 'nps': low_water: must be between 1",
        ),
        (
            lambda: PoolSettings(name="bad name", survey_id="SV_TestSurvey00001"),
            r"pool 'bad name': 'bad name' is not a pool name",
        ),
        (
            lambda: QualtricsSettings(datacenter="iad1\n", directory_id="POOL_TestDirectory01"),
            r"\[qualtrics\] datacenter: .*control characters",
        ),
        (lambda: Settings(database_url="not a url"), "database.url: is not a database URL"),
    ],
)
def test_settings_built_in_code_are_checked_by_the_same_rules(build, said: str) -> None:
    with pytest.raises(ConfigError, match=said):
        build()


def test_a_datacenter_becomes_the_base_url_in_code_too() -> None:
    settings = QualtricsSettings(datacenter="fra1", directory_id="POOL_TestDirectory01")

    assert settings.base_url == "https://fra1.qualtrics.com/API/v3"
    assert dataclasses.replace(settings, max_retries=1).base_url == settings.base_url


def test_the_database_url_is_not_in_the_settings_repr() -> None:
    assert "secret" not in repr(Settings(database_url="postgresql://u:secret@h/d"))


# --- docs/configuration.md and the example file are generated from the fields ----------------


def test_the_reference_and_the_example_are_up_to_date() -> None:
    from linkpool import config_docs

    assert config_docs.stale_files() == [], "run: python -m linkpool.config_docs"


def test_the_example_file_parses_and_mentions_every_key() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    load_settings(EXAMPLE)

    for name, _, fields in config.tables():
        assert f"[{name}" in text, name
        for found, spec in fields:
            if not spec.from_table_name:
                assert re.search(rf"^(# )?{config.toml_key(found, spec)} = ", text, re.M), (
                    found.name
                )


def test_the_reference_documents_every_table_and_key() -> None:
    text = DOC.read_text(encoding="utf-8")

    for name, _, fields in config.tables():
        assert f"<!-- generated: {name} -->" in text
        for found, spec in fields:
            if not spec.from_table_name:
                assert f"| `{config.toml_key(found, spec)}` |" in text, found.name
