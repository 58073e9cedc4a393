"""API keys of the service: generated once, stored as a hash, scoped to pools.

A key is ``lp_`` and 32 random bytes (256 bits, URL-safe base64). Only its sha256 is stored.
A slow password hash (bcrypt, argon2) exists to make guessing a *low-entropy* secret costly;
a 256-bit random key cannot be guessed whatever the hash costs, and a fast hash keeps every
request's check to a microsecond instead of the ~100 ms bcrypt would add to each claim.

Each worker keeps the table of live keys in memory for ``key_cache_ttl`` seconds
(``KeyCache``): a revoked key is refused everywhere within that time, without a restart, and
an unknown key costs no database query (at most one reload a second).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from linkpool.db import read_transaction, write_transaction
from linkpool.errors import ConfigError, LinkPoolError
from linkpool.models import api_keys

KEY_PREFIX = "lp_"
KEY_BYTES = 32
SHOWN_PREFIX_LENGTH = len(KEY_PREFIX) + 6
MAX_NAME_LENGTH = 100
RELOAD_ON_MISS_SECONDS = 1.0


class UnknownKey(LinkPoolError):
    """No API key of that name: see `linkpool keys list`."""


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(KEY_BYTES)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ApiKey:
    """A key as stored: never the key itself."""

    name: str
    prefix: str
    pools: tuple[str, ...] | None  # None: every pool
    created_at: datetime
    revoked_at: datetime | None = None

    def allows(self, pool: str) -> bool:
        return self.pools is None or pool in self.pools

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "prefix": self.prefix,
            "pools": list(self.pools) if self.pools is not None else None,
            "created_at": self.created_at.isoformat(),
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
        }


class KeyStore:
    """The SQL of the ``api_keys`` table (moves into the store package at integration)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def create(
        self, name: str, pools: Iterable[str] | None, *, now: datetime
    ) -> tuple[ApiKey, str]:
        """Store a new key's hash; returns the record and the key, which is shown only once."""
        if not name.strip() or len(name) > MAX_NAME_LENGTH:
            raise ConfigError(f"a key name must be 1 to {MAX_NAME_LENGTH} characters")
        scope = tuple(sorted(set(pools))) if pools else None
        key = generate_key()
        record = ApiKey(name, key[:SHOWN_PREFIX_LENGTH], scope, now)
        values = {
            "name": name,
            "key_hash": hash_key(key),
            "key_prefix": record.prefix,
            "pools": json.dumps(list(scope)) if scope is not None else None,
            "created_at": now,
        }
        with write_transaction(self.engine) as connection:
            taken = connection.execute(sa.select(api_keys.c.id).where(api_keys.c.name == name))
            if taken.first() is not None:
                raise ConfigError(f"a key named {name!r} exists already: revoke it or pick another")
            connection.execute(sa.insert(api_keys).values(**values))
        return record, key

    def list_keys(self) -> list[ApiKey]:
        query = sa.select(api_keys).order_by(api_keys.c.created_at, api_keys.c.id)
        with read_transaction(self.engine) as connection:
            return [_record(row) for row in connection.execute(query).mappings()]

    def revoke(self, name: str, *, now: datetime) -> ApiKey:
        """Mark the key revoked (kept, so `keys list` shows when); UnknownKey if no such name."""
        statement = (
            sa.update(api_keys)
            .where(api_keys.c.name == name, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        with write_transaction(self.engine) as connection:
            connection.execute(statement)
            row = connection.execute(sa.select(api_keys).where(api_keys.c.name == name))
            found = row.mappings().first()
        if found is None:
            raise UnknownKey(f"no API key named {name!r}: see `linkpool keys list`")
        return _record(found)

    def live_hashes(self) -> dict[str, ApiKey]:
        """Every key not revoked, by hash: what a worker holds in its cache."""
        query = sa.select(api_keys).where(api_keys.c.revoked_at.is_(None))
        with read_transaction(self.engine) as connection:
            rows = connection.execute(query).mappings().all()
        return {row["key_hash"]: _record(row) for row in rows}


def _record(row: Any) -> ApiKey:
    pools = tuple(json.loads(row["pools"])) if row["pools"] is not None else None
    return ApiKey(row["name"], row["key_prefix"], pools, row["created_at"], row["revoked_at"])


class KeyCache:
    """Authenticates presented keys against a copy of the live keys at most ``ttl`` old."""

    def __init__(
        self, store: KeyStore, *, ttl: float, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self.store = store
        self.ttl = ttl
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._keys: dict[str, ApiKey] = {}
        self._loaded_at: float | None = None

    def authenticate(self, presented: str) -> ApiKey | None:
        """The live key ``presented`` is, or None. Compares every hash in constant time."""
        if not presented.startswith(KEY_PREFIX):
            return None
        digest = hash_key(presented)
        keys = self._current(max_age=self.ttl)
        found = _match(digest, keys)
        if found is None and self._age() >= RELOAD_ON_MISS_SECONDS:
            found = _match(digest, self._current(max_age=RELOAD_ON_MISS_SECONDS))
        return found

    def _age(self) -> float:
        return float("inf") if self._loaded_at is None else self._monotonic() - self._loaded_at

    def _current(self, *, max_age: float) -> dict[str, ApiKey]:
        with self._lock:
            if self._age() >= max_age or self._loaded_at is None:
                self._keys = self.store.live_hashes()
                self._loaded_at = self._monotonic()
            return self._keys


def _match(digest: str, keys: dict[str, ApiKey]) -> ApiKey | None:
    """Look at every hash, so the time taken says nothing about which one (if any) matched."""
    found = None
    for stored, key in keys.items():
        if hmac.compare_digest(stored, digest):
            found = key
    return found
