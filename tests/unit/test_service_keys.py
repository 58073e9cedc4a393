"""API keys (hash only, scope, revocation through the cache), [service] parsing, and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from linkpool.cli import App, main
from linkpool.config import ServiceSettings, load_settings, settings_from_mapping
from linkpool.errors import ConfigError
from linkpool.models import api_keys
from linkpool.service.keys import (
    KEY_PREFIX,
    KeyCache,
    UnknownKey,
    create_key,
    hash_key,
    revoke_key,
)
from linkpool.store import Store
from tests.conftest import SURVEY_ID


def test_a_key_is_random_prefixed_and_stored_only_as_its_hash(engine, clock) -> None:
    keys = Store(engine)
    record, key = create_key(keys, "crm", ["nps"], now=clock.now())
    _, other = create_key(keys, "app", None, now=clock.now())
    assert key.startswith(KEY_PREFIX) and len(key) >= 40 and key != other
    with engine.connect() as connection:
        rows = connection.execute(sa.select(api_keys)).mappings().all()
    stored = " ".join(str(value) for row in rows for value in row.values())
    assert key not in stored and other not in stored
    assert hash_key(key) in stored
    assert record.pools == ("nps",) and record.allows("nps") and not record.allows("x")


def test_names_are_unique_and_revoking_an_unknown_name_fails(engine, clock) -> None:
    keys = Store(engine)
    create_key(keys, "crm", None, now=clock.now())
    with pytest.raises(ConfigError, match="exists"):
        create_key(keys, "crm", None, now=clock.now())
    with pytest.raises(UnknownKey):
        revoke_key(keys, "nobody", now=clock.now())
    with pytest.raises(ConfigError, match="control characters"):
        create_key(keys, "crm\nadmin", None, now=clock.now())


def test_the_cache_refuses_a_revoked_key_after_its_ttl(engine, clock) -> None:
    keys = Store(engine)
    _, key = create_key(keys, "crm", None, now=clock.now())
    now = [0.0]
    cache = KeyCache(keys, ttl=5, monotonic=lambda: now[0])
    assert cache.authenticate(key).name == "crm"
    revoke_key(keys, "crm", now=clock.now())
    now[0] = 4.0
    assert cache.authenticate(key) is not None  # within the TTL: still the cached copy
    now[0] = 5.0
    assert cache.authenticate(key) is None
    assert cache.authenticate("not even a key") is None


def test_service_settings_are_a_table_of_the_configuration(tmp_path: Path) -> None:
    path = tmp_path / "linkpool.toml"
    path.write_text(
        '[database]\nurl = "sqlite:///x.db"\n[service]\nport = 9001\nworkers = 3\n'
        'key_cache_ttl = "2s"\n'
    )
    assert load_settings(path).service == ServiceSettings(port=9001, workers=3, key_cache_ttl=2.0)
    assert settings_from_mapping({}).service == ServiceSettings()


@pytest.mark.parametrize(
    ("table", "key", "words"),
    [
        ({"prot": 1}, "service.prot", "unknown key"),
        ({"port": "80"}, "service.port", "an integer"),
        ({"port": 70000}, "service.port", "between 0 and 65535"),
        ({"workers": 0}, "service.workers", "between 1 and 64"),
        ({"retry_after": 30}, "service.retry_after", "a duration"),
        ({"key_cache_ttl": "1h"}, "service.key_cache_ttl", "at most 10m"),
        ({"host": "exa mple"}, "service.host", "a host name or an IP address"),
    ],
)
def test_a_bad_service_setting_is_one_line_naming_the_key(table, key: str, words: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        settings_from_mapping({"service": table})
    assert str(excinfo.value).startswith(f"<config>: {key}: ")
    assert words in str(excinfo.value)


def test_keys_commands(tmp_path: Path, sqlite_url: str, clock) -> None:
    path = tmp_path / "linkpool.toml"
    path.write_text(f'[database]\nurl = "{sqlite_url}"\n[pools.nps]\nsurvey_id = "{SURVEY_ID}"\n')

    def run(*args: str):
        return CliRunner().invoke(main, list(args), obj=App(str(path), clock=clock))

    created = run("keys", "create", "crm", "--pool", "nps")
    assert created.exit_code == 0, created.output
    key = created.stdout.strip()
    assert key.startswith(KEY_PREFIX)
    assert run("keys", "create", "bad", "--pool", "nope").exit_code == 2
    listed = json.loads(run("keys", "list", "--json").stdout)
    assert [k["name"] for k in listed["keys"]] == ["crm"]
    assert listed["keys"][0]["pools"] == ["nps"]
    assert key not in run("keys", "list").stdout
    assert run("keys", "revoke", "crm").exit_code == 0
    assert json.loads(run("keys", "list", "--json").stdout)["keys"][0]["revoked_at"]
    assert run("keys", "revoke", "ghost").exit_code == 1
