"""TOML configuration → typed, validated, immutable settings.

The file is chosen by ``--config PATH``, else the ``LINKPOOL_CONFIG`` environment variable, else
``./linkpool.toml``. Every error names the file and the key. The API token is never stored here:
``QualtricsSettings.token()`` reads it from the environment when a command needs Qualtrics.

Each setting is declared once, as a dataclass field whose metadata (a ``Spec``: TOML key, doc
text, kind, bounds, example) drives everything else: the parser and its unknown-key check, the
validation of settings built in code (``__post_init__``), and the reference tables of
docs/configuration.md and the example file (``linkpool.config_docs``).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import tomllib
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from linkpool.errors import ConfigError

DEFAULT_CONFIG_PATH = Path("linkpool.toml")
CONFIG_ENV = "LINKPOOL_CONFIG"
DATABASE_URL_ENV = "LINKPOOL_DATABASE_URL"
DEFAULT_DATABASE_URL = "sqlite:///linkpool.db"
DEFAULT_LIST_PREFIX = "linkpool"
MAX_LIST_SIZE = 10_000
"""Qualtrics imports at most 10,000 contacts at a time."""
MAX_TARGET_AVAILABLE = 1_000_000
MAX_LISTS_AT_TARGET = 1_000
"""A pool's stock at target may fill this many lists: a tenth of the directory's 10,000-list
listing cap, leaving room for claimed lists awaiting expiry, other pools and other tools."""
"""A thousand lists of a thousand: more than any pool needs, far below the directory's ceiling."""
MAX_DURATION = timedelta(days=3650)
"""No duration in linkpool means more than ten years; longer ones overflow dates and timeouts."""
MAX_EMBEDDED_NAME = 200
MAX_EMBEDDED_VALUE = 1024
"""Embedded-data names and values in the directory ("Adding Directory Contacts")."""
MAX_RESPONSE_VALUE = 1000
"""Embedded-data values in a response update (``update-responses``)."""
ENRICHMENT_MODES = ("contact", "response", "both", "none")
"""Where a claim's recipient and data go: onto the placeholder contact before the respondent
opens the link, onto the recorded response afterwards, both, or neither (docs/responses.md)."""
INTERVAL_SUFFIX = "_interval"

_DURATION = re.compile(r"\s*(\d{1,12})\s*([smhd])\s*")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_JOB_NAME = re.compile(r"[a-z][a-z0-9_]*")
_HOST = re.compile(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?|[0-9a-f:.]+")  # urlsplit lowercases
_DRIVER = re.compile(r"[a-z][a-z0-9]*(\+[a-z0-9_]+)?")


def parse_duration(text: str) -> timedelta:
    """``"60d"`` → 60 days. An integer and one unit of ``s``, ``m``, ``h``, ``d``."""
    match = _DURATION.fullmatch(text) if isinstance(text, str) else None
    if not match:
        raise ValueError(f"{text!r} is not a duration like '30s', '5m', '12h' or '60d'")
    seconds = int(match.group(1)) * _UNITS[match.group(2)]
    if seconds > MAX_DURATION.total_seconds():
        raise ValueError(f"{text.strip()!r} is longer than {format_duration(MAX_DURATION)}")
    return timedelta(seconds=seconds)


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


# --- what a field's metadata says -----------------------------------------------------------


class Problem(Exception):
    """One thing wrong with one value, worded without file or key (the caller adds them);
    ``sub`` names the entry of a table value that is wrong."""

    def __init__(self, message: str, sub: str | None = None) -> None:
        super().__init__(message)
        self.sub = sub

    def key(self, key: str) -> str:
        return key if self.sub is None else f"{key}.{self.sub}"


@dataclass(frozen=True)
class Kind:
    """How one kind of setting is written in TOML, checked in Python and shown in the docs."""

    name: str
    from_toml: Callable[[Any], Any]
    check: Callable[[Any, Spec], None]
    to_toml: Callable[[Any], str]


@dataclass(frozen=True)
class Spec:
    """The metadata of one setting. ``low``/``high`` bound numbers and durations, or a string's
    length; ``rule`` is a full-match pattern worded by ``rule_text``; ``echo=False`` keeps the
    value out of error messages (it may be a secret)."""

    doc: str
    kind: Kind
    low: Any = None
    high: Any = None
    rule: re.Pattern[str] | None = None
    rule_text: str = ""
    echo: bool = True
    example: Any = None
    commented: bool = False
    key: str | None = None
    table: str | None = None
    allowed_keys: tuple[str, ...] = ()
    env: str | None = None
    from_table_name: bool = False
    check: Callable[[Any], None] | None = None


@dataclass(frozen=True)
class Table:
    """The metadata of a field of ``Settings`` that holds a TOML table."""

    doc: str
    form: str  # "one" (a table), "optional" (a table or None), "named" (pools), "intervals"
    settings: type | None = None
    example_name: str = ""


SPEC = "linkpool"


def setting(default: Any = dataclasses.MISSING, *, in_repr: bool = True, **spec: Any) -> Any:
    """A dataclass field carrying its ``Spec``; mappings get a fresh copy of their default."""
    metadata = {SPEC: Spec(**spec)}
    if isinstance(default, dict):
        factory: Callable[[], dict[str, Any]] = functools.partial(dict, default)
        return field(default_factory=factory, repr=in_repr, metadata=metadata)
    return field(default=default, repr=in_repr, metadata=metadata)


def specs(kind: type) -> Iterator[tuple[dataclasses.Field[Any], Spec]]:
    """The fields of a settings class that are settings, with their specs, in order."""
    for found in dataclasses.fields(kind):
        spec = found.metadata.get(SPEC)
        if isinstance(spec, Spec):
            yield found, spec


def toml_key(found: dataclasses.Field[Any], spec: Spec) -> str:
    return spec.key or found.name


def default_of(found: dataclasses.Field[Any]) -> Any:
    if found.default_factory is not dataclasses.MISSING:
        return found.default_factory()
    return None if found.default is dataclasses.MISSING else found.default


def is_required(found: dataclasses.Field[Any]) -> bool:
    return found.default is dataclasses.MISSING and found.default_factory is dataclasses.MISSING


# --- the kinds ------------------------------------------------------------------------------


def _check_type(value: Any, wanted: type | tuple[type, ...], words: str) -> None:
    if isinstance(value, bool) and wanted is not bool:
        raise Problem(f"must be {words}, not {value!r}")
    if not isinstance(value, wanted):
        raise Problem(f"must be {words}, not {value!r}")


def _check_text(value: str, spec: Spec, *, low: int = 0, high: int | None = None) -> None:
    """No control characters in any name or id; the length and the rule of the spec."""
    shown = f"{value!r} " if spec.echo else ""
    if _CONTROL.search(value):
        raise Problem(f"{shown}must not contain control characters (newline, tab, …)".strip())
    low = spec.low if spec.low is not None else low
    high = spec.high if spec.high is not None else high
    if len(value) < low:
        raise Problem("must not be empty" if low == 1 else f"must be at least {low} characters")
    if high is not None and len(value) > high:
        raise Problem(f"must be at most {high} characters")
    if spec.rule is not None and not spec.rule.fullmatch(value):
        raise Problem(f"{shown}is not {spec.rule_text}".strip())


def _check_string(value: Any, spec: Spec) -> None:
    _check_type(value, str, "a string")
    _check_text(value, spec)


def _check_integer(value: Any, spec: Spec) -> None:
    _check_type(value, int, "an integer")
    if not spec.low <= value <= spec.high:
        raise Problem(f"must be between {spec.low} and {spec.high}, not {value}")


def _check_boolean(value: Any, spec: Spec) -> None:
    _check_type(value, bool, "true or false")


def _check_bounded_duration(value: timedelta, spec: Spec) -> None:
    if value < spec.low:
        if spec.low <= timedelta(seconds=1):
            raise Problem("must be longer than zero")
        raise Problem(f"must be at least {format_duration(spec.low)}")
    if value > spec.high:
        raise Problem(f"must be at most {format_duration(spec.high)}, not {format_duration(value)}")


def _check_duration(value: Any, spec: Spec) -> None:
    _check_type(value, timedelta, "a duration")
    _check_bounded_duration(value, spec)


def _check_seconds(value: Any, spec: Spec) -> None:
    _check_type(value, (int, float), "a number of seconds")
    _check_bounded_duration(timedelta(seconds=value), spec)


def _check_string_table(value: Any, spec: Spec) -> None:
    _check_type(value, Mapping, "a table")
    names = Spec(doc="", kind=STRING, low=1, high=MAX_EMBEDDED_NAME)
    values = Spec(doc="", kind=STRING, high=MAX_EMBEDDED_VALUE)
    for name, item in value.items():
        try:
            _check_string(name, names)
            if spec.allowed_keys and name not in spec.allowed_keys:
                raise Problem(f"not allowed here; allowed: {', '.join(spec.allowed_keys)}")
            _check_string(item, values)
        except Problem as exc:
            raise Problem(str(exc), sub=name) from None


def _duration_from_toml(value: Any) -> timedelta:
    if not isinstance(value, str):
        raise Problem(f"must be a duration like '30s', '5m', '12h' or '60d', not {value!r}")
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise Problem(str(exc)) from None


def _toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _toml_table(value: Mapping[str, str]) -> str:
    bare = re.compile(r"[A-Za-z0-9_-]+")
    items = [
        f"{name if bare.fullmatch(name) else _toml_string(name)} = {_toml_string(item)}"
        for name, item in value.items()
    ]
    return "{ " + ", ".join(items) + " }" if items else "{}"


def _same(value: Any) -> Any:
    return value


STRING = Kind("string", _same, _check_string, _toml_string)
INTEGER = Kind("integer", _same, _check_integer, str)
BOOLEAN = Kind("boolean", _same, _check_boolean, lambda value: "true" if value else "false")
DURATION = Kind(
    "duration",
    _duration_from_toml,
    _check_duration,
    lambda value: _toml_string(format_duration(value)),
)
SECONDS = Kind(
    "duration",
    lambda value: _duration_from_toml(value).total_seconds(),
    _check_seconds,
    lambda value: _toml_string(format_duration(timedelta(seconds=value))),
)
STRING_TABLE = Kind(
    "table of strings",
    lambda value: dict(value) if isinstance(value, Mapping) else value,
    _check_string_table,
    _toml_table,
)


# --- validation, in one place ---------------------------------------------------------------


class InvalidSetting(ConfigError):
    """A setting out of its bounds, raised by the settings classes themselves. ``key`` is the
    TOML key relative to the class's table (empty for the table as a whole)."""

    def __init__(self, where: str, key: str, problem: str) -> None:
        separator = " " if where.endswith("]") else ": "  # "[gc] grace: …", "pool 'a': …"
        super().__init__(f"{where}{separator}{key}: {problem}" if key else f"{where}: {problem}")
        self.key = key
        self.problem = problem


def _validate(instance: Any, where: str, rules: Callable[[], Iterator[tuple[str, str]]]) -> None:
    """Check every field of a settings instance against its spec, then the cross-field rules;
    raise the first problem as an InvalidSetting."""
    for found, spec in specs(type(instance)):
        value = getattr(instance, found.name)
        if value in (None, "") and value == found.default:
            continue  # an optional value left unset; the cross-field rules decide
        try:
            spec.kind.check(value, spec)
            if spec.check is not None:
                spec.check(value)
        except Problem as exc:
            key = "" if spec.from_table_name else toml_key(found, spec)
            if spec.table:
                key = f"{spec.table}.{key}"
            raise InvalidSetting(where, exc.key(key), str(exc)) from None
    for key, problem in rules():
        raise InvalidSetting(where, key, problem)


def _freeze(instance: Any, name: str, value: Any) -> None:
    """Normalise one field of a frozen dataclass during its own ``__post_init__``."""
    object.__setattr__(instance, name, value)


def _no_rules() -> Iterator[tuple[str, str]]:
    return iter(())


def _check_base_url(value: str) -> None:
    shape = f"{value!r} is not a URL like 'https://iad1.qualtrics.com/API/v3'"
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in ("https", "http"):
        raise Problem(f"{value!r} must start with https://")
    try:
        port = parts.port
    except ValueError:
        raise Problem(f"{value!r} has a port that is not a number from 1 to 65535") from None
    extras = parts.username or parts.password or parts.query or parts.fragment
    host = parts.hostname or ""
    if extras or port == 0 or not _HOST.fullmatch(host) or re.search(r"\s", value):
        raise Problem(shape)


def _check_database_url(value: str) -> None:
    """Parsed as SQLAlchemy will parse it; never echoed, since it may hold a password."""
    shape = "is not a database URL like 'sqlite:///linkpool.db' or 'postgresql://user@host/db'"
    try:
        url = make_url(value)
        port = url.port
    except (ArgumentError, ValueError):
        raise Problem(shape) from None
    if not _DRIVER.fullmatch(url.drivername):
        raise Problem(shape)
    if port is not None and not 1 <= port <= 65535:
        raise Problem("has a port that is not a number from 1 to 65535")
    problem = database_url_problem(url.host)
    if problem:
        raise Problem(problem)


def database_url_problem(host: str | None) -> str | None:
    """An ``@`` left in the host means the user or password holds an unescaped ``@``: the rest
    of the password would be taken for the host and printed in every connection error."""
    if host and "@" in host:
        return "has an '@' in its user or password: write it as %40"
    return None


# --- the settings ---------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class QualtricsSettings:
    """``datacenter`` is a shorthand: it becomes ``base_url`` and then reads back as None."""

    base_url: str = setting(
        "",
        doc="the API base URL of your datacenter; give it or `datacenter`, not both",
        kind=STRING,
        check=_check_base_url,
        example="https://iad1.qualtrics.com/API/v3",
    )
    datacenter: str | None = setting(
        None,
        doc="a datacenter id instead of `base_url`: `iad1` means `https://iad1.qualtrics.com/API/v3`",
        kind=STRING,
        rule=re.compile(r"[a-z]{2,4}[0-9]{1,2}"),
        rule_text="a datacenter like 'iad1'",
        example="iad1",
        commented=True,
    )
    directory_id: str = setting(
        doc="your XM Directory, which holds the placeholder contacts and mailing lists",
        kind=STRING,
        rule=re.compile(r"POOL_[A-Za-z0-9]{10,20}"),
        rule_text="a directory id like 'POOL_abc123…' (POOL_ then 10–20 letters or digits)",
        example="POOL_ExampleDirectory",
    )
    api_token_env: str = setting(
        "QUALTRICS_API_TOKEN",
        doc="the environment variable that holds your API token (read only when needed)",
        kind=STRING,
        rule=re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}"),
        rule_text="an environment variable name: give the NAME of the variable that holds "
        "the token, never the token itself",
        echo=False,
    )
    requests_per_minute: int = setting(
        3000,
        doc="client-side throttle across all threads (an assumption: 3,000 is the commonly "
        "cited brand limit, not a documented one)",
        kind=INTEGER,
        low=1,
        high=100_000,
    )
    links_requests_per_minute: int = setting(
        500,
        doc="client-side budget of the links listing, within `requests_per_minute` (an "
        "assumption: 500 is cited by one source for that endpoint)",
        kind=INTEGER,
        low=1,
        high=100_000,
    )
    max_concurrency: int = setting(
        4, doc="requests in flight at once", kind=INTEGER, low=1, high=64
    )
    timeout: float = setting(
        30.0,
        doc="per request in total: connecting, sending, headers and body (a server trickling its "
        "answer cannot hold it; a response export's file is bounded to its headers, then per read)",
        kind=SECONDS,
        low=timedelta(seconds=1),
        high=timedelta(minutes=30),
    )
    max_retries: int = setting(
        5,
        doc="retries of GET/PUT/DELETE on 429, 5xx, timeouts and connection errors "
        "(POSTs are never retried)",
        kind=INTEGER,
        low=0,
        high=20,
    )
    list_prefix: str = setting(
        DEFAULT_LIST_PREFIX,
        doc="lists are named `<list_prefix>/<pool>/<uuid>`, and gc takes only lists named so "
        "as its own: installations sharing a directory must each have their own",
        kind=STRING,
        rule=re.compile(r"[A-Za-z0-9_.-]{1,40}"),
        rule_text="1 to 40 letters, digits, '-', '_' or '.' (no '/')",
        commented=True,
    )
    list_headroom: int = setting(
        100,
        doc="refill plans no new list once the directory's mailing-list listing shows more than "
        "10,000 minus this many lists (Qualtrics lists at most 10,000)",
        kind=INTEGER,
        low=0,
        high=9_000,
    )

    def __post_init__(self) -> None:
        if self.datacenter is not None and not self.base_url:
            _validate(self, "[qualtrics]", _no_rules)  # the datacenter, before it makes a URL
            _freeze(self, "base_url", f"https://{self.datacenter}.qualtrics.com/API/v3")
            _freeze(self, "datacenter", None)
        if isinstance(self.base_url, str):
            _freeze(self, "base_url", self.base_url.rstrip("/"))
        _validate(self, "[qualtrics]", self._rules)

    def _rules(self) -> Iterator[tuple[str, str]]:
        if self.datacenter:
            yield "datacenter", "give either base_url or datacenter, not both"
        if not self.base_url:
            yield "", "needs base_url or datacenter"

    def token(self) -> str:
        """The API token from the environment; a ConfigError naming the variable if it is unset."""
        value = os.environ.get(self.api_token_env, "").strip()
        if not value:
            raise ConfigError(
                f"the Qualtrics API token is missing: set the environment variable "
                f"{self.api_token_env} (named by [qualtrics] api_token_env)"
            )
        return value


@dataclass(frozen=True, kw_only=True)
class PoolSettings:
    name: str = setting(
        doc="the pool's name: the key of its table",
        kind=STRING,
        rule=re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}"),
        rule_text="a pool name: letters, digits, '-', '_' or '.' (at most 63, first a letter "
        "or digit)",
        from_table_name=True,
    )
    survey_id: str = setting(
        doc="the survey whose personal links the pool holds",
        kind=STRING,
        rule=re.compile(r"SV_[A-Za-z0-9]{10,20}"),
        rule_text="a survey id like 'SV_abc123…' (SV_ then 10–20 letters or digits)",
        example="SV_ExampleSurvey01",
    )
    target_available: int = setting(
        500,
        doc="refill tops claimable links up to this",
        kind=INTEGER,
        low=1,
        high=MAX_TARGET_AVAILABLE,
    )
    low_water: int = setting(
        200,
        doc="refill acts, and status says LOW, when claimable links fall below this; "
        "at most `target_available`",
        kind=INTEGER,
        low=1,
        high=MAX_TARGET_AVAILABLE,
    )
    list_size: int = setting(
        1000, doc="placeholder contacts per mailing list", kind=INTEGER, low=1, high=MAX_LIST_SIZE
    )
    link_ttl: timedelta = setting(
        timedelta(days=60),
        doc="each distribution's expirationDate is now + `link_ttl` (Qualtrics' UI default is 60 days)",
        kind=DURATION,
        low=timedelta(seconds=1),
        high=MAX_DURATION,
    )
    min_remaining: timedelta = setting(
        timedelta(days=7),
        doc="a link with less life left is never handed out; shorter than `link_ttl`",
        kind=DURATION,
        low=timedelta(seconds=1),
        high=MAX_DURATION,
    )
    embedded_data: Mapping[str, str] = setting(
        {},
        doc="embedded data written onto every placeholder contact (names at most "
        f"{MAX_EMBEDDED_NAME} characters, values at most {MAX_EMBEDDED_VALUE})",
        kind=STRING_TABLE,
        example={"source": "linkpool"},
    )
    enrichment: str = setting(
        "both",
        doc="where each claim's recipient and data go: `contact` (written onto the placeholder "
        "before the link is opened; needed to pipe them into questions; one API call per "
        "claim), `response` (put on the recorded response in bulk by `linkpool responses`), "
        "`both`, or `none` (the ledger and the export only)",
        kind=STRING,
        rule=re.compile("|".join(ENRICHMENT_MODES)),
        rule_text="one of " + ", ".join(ENRICHMENT_MODES),
    )

    @property
    def writes_contact(self) -> bool:
        """Whether a claim is written back onto its placeholder contact (``sync``)."""
        return self.enrichment in ("contact", "both")

    @property
    def enriches_responses(self) -> bool:
        """Whether a claim's data is put on its recorded response (``linkpool responses``)."""
        return self.enrichment in ("response", "both")

    def __post_init__(self) -> None:
        _validate(self, f"pool {self.name!r}", self._rules)

    def _rules(self) -> Iterator[tuple[str, str]]:
        if self.low_water > self.target_available:
            yield "low_water", "must not exceed target_available"
        lists_at_target = -(-self.target_available // self.list_size)
        if lists_at_target > MAX_LISTS_AT_TARGET:
            yield (
                "target_available",
                f"needs {lists_at_target:,} lists of {self.list_size} to hold: more than "
                f"{MAX_LISTS_AT_TARGET:,}, a tenth of the 10,000 lists a directory can list "
                "(raise list_size or lower target_available)",
            )
        if self.enriches_responses and isinstance(self.embedded_data, Mapping):
            for name, value in self.embedded_data.items():
                if isinstance(value, str) and len(value) > MAX_RESPONSE_VALUE:
                    yield (
                        f"embedded_data.{name}",
                        f"must be at most {MAX_RESPONSE_VALUE} characters when enrichment "
                        "puts it on responses",
                    )
        if self.min_remaining >= self.link_ttl:
            yield "min_remaining", "must be shorter than link_ttl"


@dataclass(frozen=True, kw_only=True)
class RefillSettings:
    max_lists_per_run: int = setting(
        20,
        doc="mailing lists one refill run may create for one pool, replacements of abandoned "
        "lists included; what it cannot reach stays for the next run (a typo in a target never "
        "turns into thousands of lists)",
        kind=INTEGER,
        low=1,
        high=1000,
    )
    max_calls_per_run: int = setting(
        5000,
        doc="Qualtrics API calls after which one refill run starts no new list for a pool "
        "(lists under way finish)",
        kind=INTEGER,
        low=10,
        high=1_000_000,
    )

    def __post_init__(self) -> None:
        _validate(self, "[refill]", _no_rules)


@dataclass(frozen=True, kw_only=True)
class GcSettings:
    grace: timedelta = setting(
        timedelta(days=7),
        doc="how long after a distribution expires before gc deletes it and its list; expiry only "
        "bounds when a respondent may start, and deleting the distribution breaks a response "
        "in progress, so keep it at least the survey's incomplete-response window (Qualtrics' "
        "default: a week); shorten it only for a survey with a shorter window",
        kind=DURATION,
        low=timedelta(seconds=1),
        high=timedelta(days=365),
    )
    purge_contacts: bool = setting(
        False,
        doc="also delete expired placeholder contacts from the directory (one API call each)",
        kind=BOOLEAN,
    )

    def __post_init__(self) -> None:
        _validate(self, "[gc]", _no_rules)


@dataclass(frozen=True, kw_only=True)
class SyncSettings:
    recipient_field: str = setting(
        "linkpool_recipient",
        doc="the embedded-data field that carries the recipient id into responses",
        kind=STRING,
        low=1,
        high=MAX_EMBEDDED_NAME,
    )
    max_attempts: int = setting(
        5,
        doc="write-back attempts before a claim's write-back is marked failed "
        "(`linkpool sync --retry-failed` tries again)",
        kind=INTEGER,
        low=1,
        high=100,
    )
    contact_fields: Mapping[str, str] = setting(
        {},
        doc="contact fields (`firstName`, `lastName`, `email`) mapped to keys of the claim's "
        "data copied onto them; off by default, since directory deduplication can merge "
        "contacts that share an email",
        kind=STRING_TABLE,
        allowed_keys=("email", "firstName", "lastName"),
        example={"firstName": "first_name", "email": "email"},
        commented=True,
    )

    def __post_init__(self) -> None:
        _validate(self, "[sync]", _no_rules)


@dataclass(frozen=True, kw_only=True)
class ServiceSettings:
    """``[service]``: how ``linkpool serve`` listens and guards itself (command-line options
    win over these)."""

    host: str = setting(
        "127.0.0.1",
        doc="the address `linkpool serve` listens on",
        kind=STRING,
        rule=_HOST,
        rule_text="a host name or an IP address",
    )
    port: int = setting(
        8080,
        doc="the port `linkpool serve` listens on (0: any free port)",
        kind=INTEGER,
        low=0,
        high=65535,
    )
    workers: int = setting(
        1, doc="worker processes, each with its own engine", kind=INTEGER, low=1, high=64
    )
    # A claim is one round trip: 4 keep a worker's Python busy next to PostgreSQL on the same
    # host, and each thread more only contends for the GIL, which lengthens the tail (p99 at 8
    # HTTP connections 7.3-8.8 ms with 4, 9.2-13 ms with 8: docs/benchmarks.md).
    connections: int = setting(
        4,
        doc="PostgreSQL connections per worker for the claims its event loop sends, and as "
        "many again for its threads, which run every other blocking call, one connection "
        "each (on SQLite a worker uses one thread and one connection: its writers take "
        "turns anyway). Each claim connection does about one claim per round trip to the "
        "database: raise it for a distant database",
        kind=INTEGER,
        low=1,
        high=64,
    )
    # A claim body is a recipient and at most 64 KiB of data: twice that is room enough, and
    # small enough that a flood of large bodies costs little memory.
    max_body_bytes: int = setting(
        128 * 1024,
        doc="larger claim bodies are refused with 413",
        kind=INTEGER,
        low=1024,
        high=16 * 1024 * 1024,
    )
    max_json_depth: int = setting(
        32, doc="claim bodies nested deeper are refused with 422", kind=INTEGER, low=2, high=256
    )
    retry_after: float = setting(
        30.0,
        doc="what the `Retry-After` header of a 503 `PoolExhausted` tells clients to wait",
        kind=SECONDS,
        low=timedelta(0),
        high=timedelta(hours=1),
    )
    key_cache_ttl: float = setting(
        5.0,
        doc="how long a worker trusts its copy of the API keys: a revoked key is refused "
        "by every worker within this",
        kind=SECONDS,
        low=timedelta(0),
        high=timedelta(minutes=10),
    )
    graceful_timeout: float = setting(
        30.0,
        doc="how long requests in flight may finish after SIGTERM",
        kind=SECONDS,
        low=timedelta(0),
        high=timedelta(hours=1),
    )

    def __post_init__(self) -> None:
        _validate(self, "[service]", _no_rules)


@dataclass(frozen=True, kw_only=True)
class ResponsesSettings:
    overlap: timedelta = setting(
        timedelta(hours=1),
        doc="each export starts this long before the end of the last one, so a response "
        "recorded on the boundary (or late, or by a clock that differs) is not missed",
        kind=DURATION,
        low=timedelta(seconds=0),
        high=timedelta(days=30),
    )
    batch_size: int = setting(
        5000,
        doc="responses updated by one bulk update job",
        kind=INTEGER,
        low=1,
        high=100_000,
    )
    poll_interval: float = setting(
        2.0,
        doc="the wait between two polls of an export or an update job",
        kind=SECONDS,
        low=timedelta(seconds=1),
        high=timedelta(minutes=10),
    )
    job_timeout: float = setting(
        1800.0,
        doc="how long an export or an update job may take before the run gives up on it "
        "(the next run polls the same job again)",
        kind=SECONDS,
        low=timedelta(seconds=1),
        high=timedelta(days=1),
    )

    def __post_init__(self) -> None:
        _validate(self, "[responses]", _no_rules)


ScheduleSettings = Mapping[str, timedelta]
"""``[schedule]``: job name → interval, holding only what the file says. The job registry
declares each job's default interval and refuses names it does not know."""

SCHEDULE_SPEC = Spec(
    doc="how often `linkpool run` runs the job `<job>`",
    kind=DURATION,
    low=timedelta(seconds=1),
    high=timedelta(days=30),
)


def _schedule_rules(schedule: Mapping[str, timedelta]) -> Iterator[tuple[str, str]]:
    for name, interval in schedule.items():
        key = f"{name}{INTERVAL_SUFFIX}"
        if not isinstance(name, str) or not _JOB_NAME.fullmatch(name):
            yield key, "a job name is lowercase letters, digits and '_', first a letter"
            continue
        try:
            SCHEDULE_SPEC.kind.check(interval, SCHEDULE_SPEC)
        except Problem as exc:
            yield key, str(exc)


@dataclass(frozen=True, kw_only=True)
class Settings:
    database_url: str = setting(
        DEFAULT_DATABASE_URL,
        in_repr=False,  # it may hold a password
        doc="a SQLAlchemy URL; `postgresql://` and `postgres://` use psycopg 3; "
        f"the environment variable `{DATABASE_URL_ENV}` overrides it",
        kind=STRING,
        check=_check_database_url,
        echo=False,
        key="url",
        table="database",
        env=DATABASE_URL_ENV,
    )
    qualtrics: QualtricsSettings | None = field(
        default=None,
        metadata={
            SPEC: Table(
                doc="Needed by the commands that call Qualtrics (`refill`, `gc`, `sync`, `run`).",
                form="optional",
                settings=QualtricsSettings,
            )
        },
    )
    pools: Mapping[str, PoolSettings] = field(
        default_factory=dict,
        metadata={
            SPEC: Table(
                doc="One table per pool; the table's key is the pool's name (letters, digits, "
                "`-`, `_`, `.`; at most 63 characters; first a letter or digit).",
                form="named",
                settings=PoolSettings,
                example_name="nps-checkin",
            )
        },
    )
    schedule: ScheduleSettings = field(
        default_factory=dict,
        metadata={
            SPEC: Table(
                doc="How often `linkpool run` (the daemon) runs each job: one key "
                "`<job>_interval` per job; a job not named here runs at its own default.",
                form="intervals",
            )
        },
    )
    refill: RefillSettings = field(
        default_factory=RefillSettings,
        metadata={
            SPEC: Table(
                doc="Bounds on what one refill run may do for one pool.",
                form="one",
                settings=RefillSettings,
            )
        },
    )
    gc: GcSettings = field(
        default_factory=GcSettings,
        metadata={SPEC: Table(doc="The reaper of expired lists.", form="one", settings=GcSettings)},
    )
    sync: SyncSettings = field(
        default_factory=SyncSettings,
        metadata={SPEC: Table(doc="Recipient write-back.", form="one", settings=SyncSettings)},
    )
    service: ServiceSettings = field(
        default_factory=ServiceSettings,
        metadata={
            SPEC: Table(
                doc="The HTTP claim service, `linkpool serve` (see docs/service.md).",
                form="one",
                settings=ServiceSettings,
            )
        },
    )
    responses: ResponsesSettings = field(
        default_factory=ResponsesSettings,
        metadata={
            SPEC: Table(
                doc="Response tracking and enrichment (`linkpool responses`).",
                form="one",
                settings=ResponsesSettings,
            )
        },
    )
    source: Path | None = None

    def __post_init__(self) -> None:
        if isinstance(self.database_url, str):
            _freeze(self, "database_url", normalize_database_url(self.database_url))
        _validate(self, "settings", self._rules)

    def _rules(self) -> Iterator[tuple[str, str]]:
        if not isinstance(self.schedule, Mapping):
            yield "schedule", "must be a mapping of job names to intervals"
            return
        for key, problem in _schedule_rules(self.schedule):
            yield f"schedule.{key}", problem
        for name, pool in self.pools.items():
            if not isinstance(pool, PoolSettings) or pool.name != name:
                yield f"pools.{name}", "must be the PoolSettings of that name"

    def require_qualtrics(self) -> QualtricsSettings:
        if self.qualtrics is None:
            where = self.source or "the configuration"
            raise ConfigError(f"{where}: this command needs a [qualtrics] table")
        return self.qualtrics


def tables() -> Iterator[tuple[str, Table | None, list[tuple[dataclasses.Field[Any], Spec]]]]:
    """The file's tables in order: (TOML name, Table metadata or None for a table of Settings'
    own fields, the settings it holds)."""
    own: dict[str, list[tuple[dataclasses.Field[Any], Spec]]] = {}
    for found in dataclasses.fields(Settings):
        spec = found.metadata.get(SPEC)
        if isinstance(spec, Spec) and spec.table:
            own.setdefault(spec.table, []).append((found, spec))
    yield from ((name, None, fields) for name, fields in own.items())
    for found in dataclasses.fields(Settings):
        table = found.metadata.get(SPEC)
        if isinstance(table, Table):
            fields = list(specs(table.settings)) if table.settings else []
            yield found.name, table, fields


# --- reading the file -----------------------------------------------------------------------


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
    """Turns TOML values into constructor arguments, driven by the specs; the settings classes
    validate what they are given, and the parser words their errors with file and key."""

    def __init__(self, source: Path | None) -> None:
        self.where = str(source) if source else "<config>"
        self.source = source

    def fail(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.where}: {key}: {message}")

    def mapping(self, raw: Mapping[str, Any], key: str) -> Mapping[str, Any]:
        value = raw.get(key, {})
        if not isinstance(value, Mapping):
            raise self.fail(key, "must be a table")
        return value

    def table(self, raw: Mapping[str, Any], key: str, allowed: list[str]) -> Mapping[str, Any]:
        value = self.mapping(raw, key)
        self.no_unknown(value, key, allowed)
        return value

    def no_unknown(self, value: Mapping[str, Any], prefix: str, allowed: list[str]) -> None:
        unknown = sorted(set(value) - set(allowed))
        if unknown:
            raise self.fail(
                f"{prefix}.{unknown[0]}", f"unknown key; allowed: {', '.join(sorted(allowed))}"
            )

    def arguments(
        self,
        table: Mapping[str, Any],
        prefix: str,
        fields: list[tuple[dataclasses.Field[Any], Spec]],
    ) -> dict[str, Any]:
        """Constructor arguments for the keys present, converted from their TOML form."""
        arguments: dict[str, Any] = {}
        for found, spec in fields:
            key = toml_key(found, spec)
            if spec.from_table_name:
                continue
            if key not in table:
                if is_required(found):
                    raise self.fail(f"{prefix}.{key}", f"is required ({spec.doc})")
                continue
            try:
                arguments[found.name] = spec.kind.from_toml(table[key])
            except Problem as exc:
                raise self.fail(exc.key(f"{prefix}.{key}"), str(exc)) from None
        return arguments

    def build(self, kind: type, prefix: str, arguments: dict[str, Any]) -> Any:
        try:
            return kind(**arguments)
        except InvalidSetting as exc:
            where = f"{prefix}.{exc.key}" if exc.key else prefix
            raise self.fail(where, exc.problem) from None

    def settings(self, raw: Mapping[str, Any]) -> Settings:
        layout = list(tables())
        names = [name for name, _, _ in layout]
        unknown = sorted(set(raw) - set(names))
        if unknown:
            raise self.fail(unknown[0], f"unknown table; allowed: {', '.join(names)}")
        arguments: dict[str, Any] = {"source": self.source}
        for name, table, fields in layout:
            if table is None:
                arguments.update(self.own_table(raw, name, fields))
            elif table.form == "named":
                arguments[name] = self.named_tables(raw, name, table, fields)
            elif table.form == "intervals":
                arguments[name] = self.intervals(raw, name)
            elif name in raw or table.form == "one":
                assert table.settings is not None
                allowed = [toml_key(found, spec) for found, spec in fields]
                values = self.arguments(self.table(raw, name, allowed), name, fields)
                arguments[name] = self.build(table.settings, name, values)
        return self.build_settings(arguments)

    def own_table(
        self, raw: Mapping[str, Any], name: str, fields: list[tuple[dataclasses.Field[Any], Spec]]
    ) -> dict[str, Any]:
        table = self.table(raw, name, [toml_key(found, spec) for found, spec in fields])
        arguments = self.arguments(table, name, fields)
        for found, spec in fields:
            if found.name in arguments:
                try:  # the file's value, even when the environment overrides it
                    spec.kind.check(arguments[found.name], spec)
                except Problem as exc:
                    raise self.fail(exc.key(f"{name}.{toml_key(found, spec)}"), str(exc)) from None
            if spec.env and os.environ.get(spec.env):
                arguments[found.name] = os.environ[spec.env]
        return arguments

    def build_settings(self, arguments: dict[str, Any]) -> Settings:
        try:
            return Settings(**arguments)
        except InvalidSetting as exc:
            origin = ""
            for found, spec in specs(Settings):
                from_env = spec.env and os.environ.get(spec.env)
                if from_env and exc.key == f"{spec.table}.{toml_key(found, spec)}":
                    origin = f" (the value comes from the environment variable {spec.env})"
            raise self.fail(exc.key, exc.problem + origin) from None

    def named_tables(
        self,
        raw: Mapping[str, Any],
        name: str,
        table: Table,
        fields: list[tuple[dataclasses.Field[Any], Spec]],
    ) -> dict[str, Any]:
        named = raw.get(name, {})
        assert table.settings is not None
        if not isinstance(named, Mapping):
            raise self.fail(name, f"must be a table of tables, like [{name}.{table.example_name}]")
        built = {}
        allowed = [toml_key(f, s) for f, s in fields if not s.from_table_name]
        for entry, values in named.items():
            prefix = f"{name}.{entry}"
            if not isinstance(values, Mapping):
                raise self.fail(prefix, "must be a table")
            self.name_first(prefix, entry, fields)
            self.no_unknown(values, prefix, allowed)
            arguments = self.arguments(values, prefix, fields)
            name_field = next(f.name for f, s in fields if s.from_table_name)
            built[entry] = self.build(table.settings, prefix, {name_field: entry, **arguments})
        return built

    def name_first(
        self, prefix: str, entry: str, fields: list[tuple[dataclasses.Field[Any], Spec]]
    ) -> None:
        """A bad table name is reported before whatever else its table holds."""
        for _, spec in fields:
            if spec.from_table_name:
                try:
                    spec.kind.check(entry, spec)
                except Problem as exc:
                    raise self.fail(prefix, str(exc)) from None

    def intervals(self, raw: Mapping[str, Any], name: str) -> dict[str, timedelta]:
        table = self.mapping(raw, name)
        schedule = {}
        for key, value in table.items():
            if not key.endswith(INTERVAL_SUFFIX):
                raise self.fail(
                    f"{name}.{key}", f"unknown key; [{name}] keys are <job>{INTERVAL_SUFFIX}"
                )
            try:
                schedule[key.removesuffix(INTERVAL_SUFFIX)] = SCHEDULE_SPEC.kind.from_toml(value)
            except Problem as exc:
                raise self.fail(f"{name}.{key}", str(exc)) from None
        return schedule


__all__ = [
    "GcSettings",
    "PoolSettings",
    "QualtricsSettings",
    "RefillSettings",
    "ScheduleSettings",
    "ServiceSettings",
    "Settings",
    "SyncSettings",
    "format_duration",
    "load_settings",
    "normalize_database_url",
    "parse_duration",
    "settings_from_mapping",
]
