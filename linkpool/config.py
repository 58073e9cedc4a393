"""TOML configuration → typed, validated, immutable settings.

The file is chosen by ``--config PATH``, else the ``LINKPOOL_CONFIG`` environment variable, else
``./linkpool.toml``. Every error names the file and the key. The API token is never stored here:
``QualtricsSettings.token()`` reads it from the environment when a command needs Qualtrics.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from linkpool.errors import ConfigError

DEFAULT_CONFIG_PATH = Path("linkpool.toml")
CONFIG_ENV = "LINKPOOL_CONFIG"
DATABASE_URL_ENV = "LINKPOOL_DATABASE_URL"
DEFAULT_DATABASE_URL = "sqlite:///linkpool.db"
MAX_LIST_SIZE = 10_000
DEFAULT_LIST_PREFIX = "linkpool"

_DURATION = re.compile(r"^\s*(\d+)\s*([smhd])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
_SURVEY_ID = re.compile(r"^SV_[A-Za-z0-9]{10,20}$")
_DIRECTORY_ID = re.compile(r"^POOL_[A-Za-z0-9]{10,20}$")
_DATACENTER = re.compile(r"^[a-z]{2,4}[0-9]{1,2}$")
_POOL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_LIST_PREFIX = re.compile(r"^[A-Za-z0-9_.-]{1,40}$")
_LIST_PREFIX_RULE = "1 to 40 letters, digits, '-', '_' or '.' (no '/')"


def parse_duration(text: str) -> timedelta:
    """``"60d"`` → 60 days. An integer and one unit of ``s``, ``m``, ``h``, ``d``."""
    match = _DURATION.match(text) if isinstance(text, str) else None
    if not match:
        raise ValueError(f"{text!r} is not a duration like '30s', '5m', '12h' or '60d'")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def format_duration(value: timedelta) -> str:
    """The inverse of ``parse_duration``, choosing the largest exact unit."""
    seconds = int(value.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def normalize_database_url(url: str) -> str:
    """``postgresql://`` and ``postgres://`` mean psycopg 3, without users spelling the driver."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


@dataclass(frozen=True)
class QualtricsSettings:
    base_url: str
    directory_id: str
    api_token_env: str = "QUALTRICS_API_TOKEN"
    requests_per_minute: int = 3000
    max_concurrency: int = 4
    timeout: float = 30.0
    max_retries: int = 5
    list_prefix: str = DEFAULT_LIST_PREFIX
    """Lists are named ``<list_prefix>/<pool>/<uuid>``; gc takes only lists named so as its own,
    so installations sharing a directory must each have their own."""

    def __post_init__(self) -> None:
        if not _LIST_PREFIX.match(self.list_prefix):
            raise ConfigError(f"[qualtrics] list_prefix: must be {_LIST_PREFIX_RULE}")

    def token(self) -> str:
        """The API token from the environment; a ConfigError naming the variable if it is unset."""
        value = os.environ.get(self.api_token_env, "").strip()
        if not value:
            raise ConfigError(
                f"the Qualtrics API token is missing: set the environment variable "
                f"{self.api_token_env} (named by [qualtrics] api_token_env)"
            )
        return value


@dataclass(frozen=True)
class PoolSettings:
    name: str
    survey_id: str
    target_available: int = 500
    low_water: int = 200
    list_size: int = 1000
    link_ttl: timedelta = timedelta(days=60)
    min_remaining: timedelta = timedelta(days=7)
    embedded_data: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        problems = pool_problems(self)
        if problems:
            key, message = problems[0]
            raise ConfigError(f"pool {self.name!r}: {key}: {message}")


@dataclass(frozen=True)
class ScheduleSettings:
    refill_interval: timedelta = timedelta(minutes=5)
    gc_interval: timedelta = timedelta(hours=1)
    sync_interval: timedelta = timedelta(seconds=30)


@dataclass(frozen=True)
class GcSettings:
    grace: timedelta = timedelta(hours=1)
    purge_contacts: bool = False


@dataclass(frozen=True)
class SyncSettings:
    recipient_field: str = "linkpool_recipient"
    max_attempts: int = 5
    contact_fields: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Settings:
    database_url: str = field(default=DEFAULT_DATABASE_URL, repr=False)  # may hold a password
    qualtrics: QualtricsSettings | None = None
    pools: Mapping[str, PoolSettings] = field(default_factory=dict)
    schedule: ScheduleSettings = field(default_factory=ScheduleSettings)
    gc: GcSettings = field(default_factory=GcSettings)
    sync: SyncSettings = field(default_factory=SyncSettings)
    source: Path | None = None

    def require_qualtrics(self) -> QualtricsSettings:
        if self.qualtrics is None:
            where = self.source or "the configuration"
            raise ConfigError(f"{where}: this command needs a [qualtrics] table")
        return self.qualtrics


def pool_problems(pool: PoolSettings) -> list[tuple[str, str]]:
    """Cross-field rules of a pool, as (key, message) pairs."""
    problems = []
    if not _SURVEY_ID.match(pool.survey_id):
        problems.append(("survey_id", f"{pool.survey_id!r} is not a survey id like 'SV_abc123…'"))
    if not 1 <= pool.list_size <= MAX_LIST_SIZE:
        problems.append(("list_size", f"must be between 1 and {MAX_LIST_SIZE}"))
    if pool.target_available < 1:
        problems.append(("target_available", "must be at least 1"))
    if pool.low_water < 0:
        problems.append(("low_water", "must not be negative"))
    if pool.low_water > pool.target_available:
        problems.append(("low_water", "must not exceed target_available"))
    if pool.min_remaining >= pool.link_ttl:
        problems.append(("min_remaining", "must be shorter than link_ttl"))
    return problems


def resolve_config_path(path: str | os.PathLike[str] | None) -> Path:
    """``--config``, else ``$LINKPOOL_CONFIG``, else ``./linkpool.toml``."""
    if path is not None:
        return Path(path)
    env = os.environ.get(CONFIG_ENV)
    return Path(env) if env else DEFAULT_CONFIG_PATH


def load_settings(path: str | os.PathLike[str] | None = None) -> Settings:
    """Read and validate the configuration file; raise ConfigError naming file and key."""
    source = resolve_config_path(path)
    try:
        raw = tomllib.loads(source.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"{source}: configuration file not found; copy config/linkpool.example.toml "
            f"there, or pass --config / set {CONFIG_ENV}"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{source}: cannot read the configuration file: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    return settings_from_mapping(raw, source=source)


def settings_from_mapping(raw: Mapping[str, Any], *, source: Path | None = None) -> Settings:
    """Build Settings from parsed TOML (what ``load_settings`` does after reading the file)."""
    return _Parser(source).settings(raw)


class _Parser:
    def __init__(self, source: Path | None) -> None:
        self.where = str(source) if source else "<config>"
        self.source = source

    def fail(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.where}: {key}: {message}")

    def table(self, raw: Mapping[str, Any], key: str, allowed: set[str]) -> Mapping[str, Any]:
        value = raw.get(key, {})
        if not isinstance(value, Mapping):
            raise self.fail(key, "must be a table")
        unknown = sorted(set(value) - allowed)
        if unknown:
            raise self.fail(
                f"{key}.{unknown[0]}", f"unknown key; allowed: {', '.join(sorted(allowed))}"
            )
        return value

    def value(
        self, table: Mapping[str, Any], prefix: str, key: str, kind: type, default: Any
    ) -> Any:
        if key not in table:
            return default
        value = table[key]
        wrong = not isinstance(value, kind) or (kind in (int, float) and isinstance(value, bool))
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            wrong = False
        if wrong:
            raise self.fail(f"{prefix}.{key}", f"must be {_KIND_NAMES[kind]}, not {value!r}")
        return value

    def positive_int(self, table: Mapping[str, Any], prefix: str, key: str, default: int) -> int:
        value = self.value(table, prefix, key, int, default)
        if value < 1:
            raise self.fail(f"{prefix}.{key}", f"must be a positive integer, not {value}")
        return int(value)

    def non_negative_int(
        self, table: Mapping[str, Any], prefix: str, key: str, default: int
    ) -> int:
        value = self.value(table, prefix, key, int, default)
        if value < 0:
            raise self.fail(f"{prefix}.{key}", f"must not be negative, not {value}")
        return int(value)

    def duration(
        self, table: Mapping[str, Any], prefix: str, key: str, default: timedelta
    ) -> timedelta:
        text = self.value(table, prefix, key, str, None)
        if text is None:
            return default
        try:
            value = parse_duration(text)
        except ValueError as exc:
            raise self.fail(f"{prefix}.{key}", str(exc)) from None
        if value <= timedelta(0):
            raise self.fail(f"{prefix}.{key}", "must be longer than zero")
        return value

    def string_map(self, table: Mapping[str, Any], prefix: str, key: str) -> dict[str, str]:
        value = self.value(table, prefix, key, dict, {})
        for name, item in value.items():
            if not isinstance(item, str):
                raise self.fail(f"{prefix}.{key}.{name}", f"must be a string, not {item!r}")
        return dict(value)

    def settings(self, raw: Mapping[str, Any]) -> Settings:
        unknown = sorted(set(raw) - set(_SECTIONS))
        if unknown:
            raise self.fail(unknown[0], f"unknown table; allowed: {', '.join(_SECTIONS)}")
        return Settings(
            database_url=self.database(raw),
            qualtrics=self.qualtrics(raw) if "qualtrics" in raw else None,
            pools=self.pools(raw),
            schedule=self.schedule(raw),
            gc=self.gc(raw),
            sync=self.sync(raw),
            source=self.source,
        )

    def database(self, raw: Mapping[str, Any]) -> str:
        table = self.table(raw, "database", {"url"})
        from_file = self.value(table, "database", "url", str, DEFAULT_DATABASE_URL)
        url = os.environ.get(DATABASE_URL_ENV) or from_file
        if "://" not in url:
            raise self.fail("database.url", f"{url!r} is not a URL like 'sqlite:///linkpool.db'")
        return normalize_database_url(url)

    def qualtrics(self, raw: Mapping[str, Any]) -> QualtricsSettings:
        p = "qualtrics"
        table = self.table(raw, p, _QUALTRICS_KEYS)
        base_url = self.value(table, p, "base_url", str, None)
        datacenter = self.value(table, p, "datacenter", str, None)
        if base_url and datacenter:
            raise self.fail(f"{p}.datacenter", "give either base_url or datacenter, not both")
        if datacenter:
            if not _DATACENTER.match(datacenter):
                raise self.fail(
                    f"{p}.datacenter", f"{datacenter!r} is not a datacenter like 'iad1'"
                )
            base_url = f"https://{datacenter}.qualtrics.com/API/v3"
        if not base_url:
            raise self.fail(p, "needs base_url or datacenter")
        if not base_url.startswith(("https://", "http://")):
            raise self.fail(f"{p}.base_url", f"{base_url!r} must start with https://")
        directory_id = self.value(table, p, "directory_id", str, None)
        if directory_id is None:
            raise self.fail(f"{p}.directory_id", "is required (your XM Directory id, 'POOL_…')")
        if not _DIRECTORY_ID.match(directory_id):
            raise self.fail(
                f"{p}.directory_id", f"{directory_id!r} is not a directory id like 'POOL_abc123…'"
            )
        token_env = self.value(table, p, "api_token_env", str, "QUALTRICS_API_TOKEN")
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", token_env):
            raise self.fail(  # never echo the value: it may be the token itself
                f"{p}.api_token_env",
                "is not an environment variable name: give the NAME of the variable "
                "that holds the token, never the token itself",
            )
        timeout = self.duration(table, p, "timeout", timedelta(seconds=30))
        list_prefix = self.value(table, p, "list_prefix", str, DEFAULT_LIST_PREFIX)
        if not _LIST_PREFIX.match(list_prefix):
            raise self.fail(f"{p}.list_prefix", f"{list_prefix!r} is not {_LIST_PREFIX_RULE}")
        return QualtricsSettings(
            base_url=base_url.rstrip("/"),
            directory_id=directory_id,
            api_token_env=token_env,
            requests_per_minute=self.positive_int(table, p, "requests_per_minute", 3000),
            max_concurrency=self.positive_int(table, p, "max_concurrency", 4),
            timeout=timeout.total_seconds(),
            max_retries=self.non_negative_int(table, p, "max_retries", 5),
            list_prefix=list_prefix,
        )

    def pools(self, raw: Mapping[str, Any]) -> dict[str, PoolSettings]:
        pools = raw.get("pools", {})
        if not isinstance(pools, Mapping):
            raise self.fail("pools", "must be a table of pools, like [pools.nps-checkin]")
        return {name: self.pool(name, table) for name, table in pools.items()}

    def pool(self, name: str, raw: Any) -> PoolSettings:
        p = f"pools.{name}"
        if not _POOL_NAME.match(name):
            raise self.fail(p, "a pool name is letters, digits, '-', '_' or '.' (at most 63)")
        if not isinstance(raw, Mapping):
            raise self.fail(p, "must be a table")
        unknown = sorted(set(raw) - _POOL_KEYS)
        if unknown:
            raise self.fail(
                f"{p}.{unknown[0]}", f"unknown key; allowed: {', '.join(sorted(_POOL_KEYS))}"
            )
        survey_id = self.value(raw, p, "survey_id", str, None)
        if survey_id is None:
            raise self.fail(f"{p}.survey_id", "is required (the survey's id, 'SV_…')")
        pool = dict(
            name=name,
            survey_id=survey_id,
            target_available=self.positive_int(raw, p, "target_available", 500),
            low_water=self.value(raw, p, "low_water", int, 200),
            list_size=self.value(raw, p, "list_size", int, 1000),
            link_ttl=self.duration(raw, p, "link_ttl", timedelta(days=60)),
            min_remaining=self.duration(raw, p, "min_remaining", timedelta(days=7)),
            embedded_data=self.string_map(raw, p, "embedded_data"),
        )
        for key, message in pool_problems(_unchecked_pool(pool)):
            raise self.fail(f"{p}.{key}", message)
        return PoolSettings(**pool)

    def schedule(self, raw: Mapping[str, Any]) -> ScheduleSettings:
        p = "schedule"
        table = self.table(raw, p, {"refill_interval", "gc_interval", "sync_interval"})
        d = ScheduleSettings()
        return ScheduleSettings(
            refill_interval=self.duration(table, p, "refill_interval", d.refill_interval),
            gc_interval=self.duration(table, p, "gc_interval", d.gc_interval),
            sync_interval=self.duration(table, p, "sync_interval", d.sync_interval),
        )

    def gc(self, raw: Mapping[str, Any]) -> GcSettings:
        table = self.table(raw, "gc", {"grace", "purge_contacts"})
        return GcSettings(
            grace=self.duration(table, "gc", "grace", GcSettings.grace),
            purge_contacts=self.value(table, "gc", "purge_contacts", bool, False),
        )

    def sync(self, raw: Mapping[str, Any]) -> SyncSettings:
        p = "sync"
        table = self.table(raw, p, {"recipient_field", "max_attempts", "contact_fields"})
        fields = self.string_map(table, p, "contact_fields")
        bad = sorted(set(fields) - _CONTACT_FIELDS)
        if bad:
            raise self.fail(
                f"{p}.contact_fields.{bad[0]}",
                f"not a contact field; allowed: {', '.join(sorted(_CONTACT_FIELDS))}",
            )
        return SyncSettings(
            recipient_field=self.value(table, p, "recipient_field", str, "linkpool_recipient"),
            max_attempts=self.positive_int(table, p, "max_attempts", 5),
            contact_fields=fields,
        )


def _unchecked_pool(values: dict[str, Any]) -> PoolSettings:
    """A PoolSettings without running its own validation, so the parser can word the error."""
    pool = object.__new__(PoolSettings)
    for key, value in values.items():
        object.__setattr__(pool, key, value)
    return pool


_SECTIONS = ("database", "qualtrics", "schedule", "gc", "sync", "pools")
_QUALTRICS_KEYS = {
    "base_url",
    "datacenter",
    "directory_id",
    "api_token_env",
    "requests_per_minute",
    "max_concurrency",
    "timeout",
    "max_retries",
    "list_prefix",
}
_POOL_KEYS = {
    "survey_id",
    "target_available",
    "low_water",
    "list_size",
    "link_ttl",
    "min_remaining",
    "embedded_data",
}
_CONTACT_FIELDS = {"firstName", "lastName", "email"}
_KIND_NAMES: dict[type, str] = {
    int: "an integer",
    float: "a number",
    str: "a string",
    bool: "true or false",
    dict: "a table",
}

__all__ = [
    "GcSettings",
    "PoolSettings",
    "QualtricsSettings",
    "ScheduleSettings",
    "Settings",
    "SyncSettings",
    "load_settings",
    "parse_duration",
    "settings_from_mapping",
]
