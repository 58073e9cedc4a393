"""``[service]``: how ``linkpool serve`` listens and guards itself.

The fields of ``ServiceSettings`` drive the parser: each default is declared once, on its field,
with its lower bound in the field's metadata. At integration this table moves into
``linkpool.config``; until then it is read here, from the same file, by ``service_settings``.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from linkpool.config import Settings
from linkpool.errors import ConfigError


def _at_least(minimum: float) -> Any:
    return {"minimum": minimum}


@dataclass(frozen=True)
class ServiceSettings:
    host: str = "127.0.0.1"
    port: int = field(default=8080, metadata=_at_least(0))
    workers: int = field(default=1, metadata=_at_least(1))
    # A claim body is a recipient (255 characters) and at most 64 KiB of data: twice that is
    # room enough, and small enough that a flood of large bodies costs little memory.
    max_body_bytes: int = field(default=128 * 1024, metadata=_at_least(1024))
    max_json_depth: int = field(default=32, metadata=_at_least(2))
    # Seconds a client is told to wait (Retry-After) when a pool is exhausted.
    retry_after: int = field(default=30, metadata=_at_least(0))
    # Seconds a worker trusts its copy of the key table: a revoked key is refused within this.
    key_cache_ttl: float = field(default=5.0, metadata=_at_least(0))
    # Seconds uvicorn waits for requests in flight after SIGTERM before it closes them.
    graceful_timeout: float = field(default=30.0, metadata=_at_least(0))


def service_settings(settings: Settings) -> ServiceSettings:
    """The ``[service]`` table of the file ``settings`` was loaded from (defaults without one)."""
    if settings.source is None or not settings.source.is_file():
        return ServiceSettings()
    raw = tomllib.loads(Path(settings.source).read_text(encoding="utf-8"))
    table = raw.get("service", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{settings.source}: service: must be a table")
    return parse_service_table(table, where=str(settings.source))


def parse_service_table(table: dict[str, Any], *, where: str = "<config>") -> ServiceSettings:
    known = {f.name: f for f in fields(ServiceSettings)}
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise ConfigError(
            f"{where}: service.{unknown[0]}: unknown key; allowed: {', '.join(known)}"
        )
    values = {name: _checked(known[name], value, where) for name, value in table.items()}
    return replace(ServiceSettings(), **values)


def _checked(spec: Any, value: Any, where: str) -> Any:
    kind = {"str": str, "int": int, "float": float}[spec.type]
    accepted = (int, float) if kind is float else (kind,)
    if isinstance(value, bool) or not isinstance(value, accepted):
        raise ConfigError(f"{where}: service.{spec.name}: must be {_KIND_NAMES[kind]}")
    minimum = spec.metadata.get("minimum")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{where}: service.{spec.name}: must be at least {minimum}")
    return kind(value)


_KIND_NAMES = {str: "a string", int: "an integer", float: "a number"}
