"""API keys (hash only, scope, revocation through the cache), [service] parsing, and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from linkpool.cli import App, main
from linkpool.config import load_settings
from linkpool.errors import ConfigError
from linkpool.models import api_keys
from linkpool.service.keys import KEY_PREFIX, KeyCache, KeyStore, UnknownKey, hash_key
from linkpool.service.settings import ServiceSettings, parse_service_table, service_settings
from tests.conftest import SURVEY_ID


def test_a_key_is_random_prefixed_and_stored_only_as_its_hash(engine, clock) -> None:
    keys = KeyStore(engine)
    record, key = keys.create("crm", ["nps"], now=clock.now())
    _, other = keys.create("app", None, now=clock.now())
    assert key.startswith(KEY_PREFIX) and len(key) >= 40 and key != other
    with engine.connect() as connection:
        rows = connection.execute(sa.select(api_keys)).mappings().all()
    stored = " ".join(str(value) for row in rows for value in row.values())
    assert key not in stored and other not in stored
    assert hash_key(key) in stored
    assert record.pools == ("nps",) and record.allows("nps") and not record.allows("x")


def test_names_are_unique_and_revoking_an_unknown_name_fails(engine, clock) -> None:
    keys = KeyStore(engine)
    keys.create("crm", None, now=clock.now())
    with pytest.raises(ConfigError, match="exists"):
        keys.create("crm", None, now=clock.now())
    with pytest.raises(UnknownKey):
        keys.revoke("nobody", now=clock.now())


def test_the_cache_refuses_a_revoked_key_after_its_ttl(engine, clock) -> None:
    keys = KeyStore(engine)
    _, key = keys.create("crm", None, now=clock.now())
    now = [0.0]
    cache = KeyCache(keys, ttl=5, monotonic=lambda: now[0])
    assert cache.authenticate(key).name == "crm"
    keys.revoke("crm", now=clock.now())
    now[0] = 4.0
    assert cache.authenticate(key) is not None  # within the TTL: still the cached copy
    now[0] = 5.0
    assert cache.authenticate(key) is None
    assert cache.authenticate("not even a key") is None


def test_service_settings_defaults_and_errors(tmp_path: Path) -> None:
    assert parse_service_table({}) == ServiceSettings()
    assert parse_service_table({"port": 9000, "key_cache_ttl": 2}).key_cache_ttl == 2.0
    for table, words in [
        ({"prot": 1}, "unknown key"),
        ({"port": "80"}, "an integer"),
        ({"workers": 0}, "at least 1"),
        ({"retry_after": True}, "an integer"),
    ]:
        with pytest.raises(ConfigError, match=words):
            parse_service_table(table)
    path = tmp_path / "linkpool.toml"
    path.write_text('[database]\nurl = "sqlite:///x.db"\n[service]\nport = 9001\nworkers = 3\n')
    assert service_settings(load_settings(path)) == ServiceSettings(port=9001, workers=3)


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
