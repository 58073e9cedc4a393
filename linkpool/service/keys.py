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
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime

from linkpool.errors import ConfigError, DuplicateRecord, LinkPoolError
from linkpool.store import ApiKeyRecord, Store

KEY_PREFIX = "lp_"
KEY_BYTES = 32
SHOWN_PREFIX_LENGTH = len(KEY_PREFIX) + 6
MAX_NAME_LENGTH = 100
RELOAD_ON_MISS_SECONDS = 1.0
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class UnknownKey(LinkPoolError):
    """No API key of that name: see `linkpool keys list`."""


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(KEY_BYTES)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def create_key(
    store: Store, name: str, pools: Iterable[str] | None, *, now: datetime
) -> tuple[ApiKeyRecord, str]:
    """Store a new key's hash; returns the record and the key, which is shown only once."""
    if not name.strip() or len(name) > MAX_NAME_LENGTH or _CONTROL.search(name):
        raise ConfigError(
            f"a key name must be 1 to {MAX_NAME_LENGTH} characters, without control characters"
        )
    scope = tuple(sorted(set(pools))) if pools else None
    key = generate_key()
    try:
        record = store.insert_api_key(
            name, key_hash=hash_key(key), prefix=key[:SHOWN_PREFIX_LENGTH], pools=scope, now=now
        )
    except DuplicateRecord:
        raise ConfigError(
            f"a key named {name!r} exists already: revoke it or pick another"
        ) from None
    return record, key


def revoke_key(store: Store, name: str, *, now: datetime) -> ApiKeyRecord:
    """Revoke key ``name`` (kept, so `keys list` shows when); UnknownKey if there is none."""
    record = store.revoke_api_key(name, now=now)
    if record is None:
        raise UnknownKey(f"no API key named {name!r}: see `linkpool keys list`")
    return record


class KeyCache:
    """Authenticates presented keys against a copy of the live keys at most ``ttl`` old."""

    def __init__(
        self, store: Store, *, ttl: float, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self.store = store
        self.ttl = ttl
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._keys: dict[str, ApiKeyRecord] = {}
        self._loaded_at: float | None = None

    def cached(self, presented: str) -> tuple[bool, ApiKeyRecord | None]:
        """Without the database: ``(True, key or None)`` when the cached copy decides,
        ``(False, None)`` when only a reload can (then ``authenticate`` does it). Lets the
        service check a key on its event loop and go to a thread only to reload."""
        if not presented.startswith(KEY_PREFIX):
            return True, None
        age = self._age()
        if age >= self.ttl:
            return False, None
        found = _match(hash_key(presented), self._keys)
        if found is None and age >= RELOAD_ON_MISS_SECONDS:
            return False, None
        return True, found

    def authenticate(self, presented: str) -> ApiKeyRecord | None:
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

    def _current(self, *, max_age: float) -> dict[str, ApiKeyRecord]:
        with self._lock:
            if self._age() >= max_age or self._loaded_at is None:
                self._keys = self.store.live_api_keys()
                self._loaded_at = self._monotonic()
            return self._keys


def _match(digest: str, keys: dict[str, ApiKeyRecord]) -> ApiKeyRecord | None:
    """Look at every hash, so the time taken says nothing about which one (if any) matched."""
    found = None
    for stored, key in keys.items():
        if hmac.compare_digest(stored, digest):
            found = key
    return found
