"""``LinkPool``: the application's handle on its pools, and ``claim``, the hot path."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy.engine import Engine

from linkpool.claimer import Claim, ClaimExpired, check_text
from linkpool.clock import Clock, SystemClock
from linkpool.config import (
    MAX_EMBEDDED_NAME,
    MAX_RESPONSE_VALUE,
    PoolSettings,
    QualtricsSettings,
    Settings,
    SyncSettings,
    load_settings,
)
from linkpool.db import check_migrated, create_engine
from linkpool.errors import (
    ConfigError,
    DuplicateRecord,
    IdempotencyConflict,
    InvalidClaim,
    PoolExhausted,
    UnknownPool,
)
from linkpool.forget import ForgetReport, check_recipient, forget
from linkpool.models import MAX_RECIPIENT_LENGTH, WriteBack
from linkpool.qualtrics.client import QualtricsClient, normal_link
from linkpool.store import ClaimRecord, ClaimRequest, PoolCounts, ResponseCounts, Store
from linkpool.sync import as_text, write_back_claim

MAX_DATA_BYTES = 64 * 1024
MAX_KEY_LENGTH = 255
MAX_DATA_DEPTH = 32
"""Objects and arrays nested deeper than this are refused: no transaction needs more, and
deeper values cannot be compared or decoded safely (Python's recursion limit, PostgreSQL's
jsonb depth)."""


def canonical_json(data: Mapping[str, Any] | None) -> str | None:
    """``data`` as compact JSON with sorted keys: equal data, equal text. Validates size."""
    if data is None:
        return None
    if not isinstance(data, Mapping):
        raise InvalidClaim(f"data must be a JSON object (a dict), not {type(data).__name__}")
    _check_depth(data)
    try:
        text = json.dumps(
            data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidClaim(f"data is not JSON-serialisable: {exc}") from None
    try:
        encoded = text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidClaim(
            "data is not valid Unicode (a lone surrogate in a key or value)"
        ) from None
    if len(encoded) > MAX_DATA_BYTES:
        raise InvalidClaim(f"data is larger than {MAX_DATA_BYTES // 1024} KiB once encoded as JSON")
    check_embedded_data(data)
    return text


def check_embedded_data(data: Mapping[str, Any]) -> None:
    """Each key of ``data`` becomes an embedded-data field of the contact (and, later, of the
    response): refuse now what Qualtrics would refuse at write-back. Names at most 200
    characters; values, as written (``sync.as_text``), at most 1,000: the response update's
    limit, below the directory's 1,024, so the data fits both."""
    for key, value in data.items():
        if len(key) > MAX_EMBEDDED_NAME:
            raise InvalidClaim(
                f"data key {key[:40]!r}… is {len(key)} characters long; Qualtrics takes "
                f"embedded-data names of at most {MAX_EMBEDDED_NAME}"
            )
        if value is not None and len(as_text(value)) > MAX_RESPONSE_VALUE:
            raise InvalidClaim(
                f"data key {key!r} has a value of {len(as_text(value))} characters; Qualtrics "
                f"takes embedded-data values of at most {MAX_RESPONSE_VALUE} (as text)"
            )


def _check_depth(data: Mapping[str, Any]) -> None:
    """Walks ``data`` without recursion; InvalidClaim past ``MAX_DATA_DEPTH`` levels."""
    level: list[object] = [data]
    for _ in range(MAX_DATA_DEPTH):
        level = [
            child
            for value in level
            if isinstance(value, Mapping | list | tuple)
            for child in (value.values() if isinstance(value, Mapping) else value)
        ]
        if not level:
            return
    if any(isinstance(value, Mapping | list | tuple) for value in level):
        raise InvalidClaim(f"data is nested deeper than {MAX_DATA_DEPTH} levels")


class LinkPool:
    """Claims links from the pools of one database (a ``Claimer``). Safe to share between
    threads. A process forked after it was built (a pre-forking web server) drops the parent's
    connections on its first claim and opens its own.

    Give it either ``database_url`` or an ``engine`` (then the caller owns the engine's
    configuration; ``close`` still disposes of it)."""

    def __init__(
        self,
        *,
        pools: Mapping[str, PoolSettings] | Iterable[PoolSettings],
        database_url: str | None = None,
        clock: Clock | None = None,
        check_schema: bool = True,
        engine: Engine | None = None,
        client: QualtricsClient | None = None,
        qualtrics: QualtricsSettings | None = None,
        sync: SyncSettings | None = None,
    ) -> None:
        if not isinstance(pools, Mapping):
            pools = {pool.name: pool for pool in pools}
        self.pools: Mapping[str, PoolSettings] = dict(pools)
        self.clock = clock or SystemClock()
        self.engine = engine or _engine_for(database_url)
        self.store = Store(self.engine)
        self._pid = os.getpid()
        # For claim(..., sync=True): a client given, or one built on first use from ``qualtrics``.
        self._client = client
        self._owns_client = False
        self._client_lock = threading.Lock()
        self._qualtrics = qualtrics
        self.sync_settings = sync or SyncSettings()
        if check_schema:
            check_migrated(self.engine)

    @classmethod
    def from_config(cls, path: str | os.PathLike[str] | None = None, **kwargs: Any) -> LinkPool:
        return cls.from_settings(load_settings(path), **kwargs)

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> LinkPool:
        kwargs.setdefault("qualtrics", settings.qualtrics)
        kwargs.setdefault("sync", settings.sync)
        return cls(database_url=settings.database_url, pools=settings.pools, **kwargs)

    def pool(self, name: str) -> PoolSettings:
        try:
            return self.pools[name]
        except (KeyError, TypeError):  # TypeError: a name that is not even hashable
            raise UnknownPool(name, list(self.pools)) from None

    def claim(
        self,
        pool: str,
        *,
        recipient: str,
        key: str | None = None,
        data: Mapping[str, Any] | None = None,
        sync: bool = False,
    ) -> Claim:
        """Hand one available link of ``pool`` to ``recipient``, atomically, without calling
        Qualtrics. With ``key``, a repeat returns the first claim (or raises
        IdempotencyConflict if recipient or data differ).

        With ``sync``, the recipient and data are also written onto the link's contact in
        Qualtrics before returning. If Qualtrics fails, the claim is returned all the same and
        its write-back stays pending for ``linkpool sync``."""
        client = self.qualtrics_client() if sync else None
        claim = self._claim(pool, recipient=recipient, key=key, data=data)
        if client is not None:
            write_back_claim(
                client, self.store, self.pools, self.sync_settings, self.clock, claim.link_id
            )
        return claim

    def qualtrics_client(self) -> QualtricsClient:
        """The client for inline write-backs; ConfigError without a [qualtrics] table."""
        with self._client_lock:
            if self._client is None:
                if self._qualtrics is None:
                    raise ConfigError("claim(..., sync=True) needs a [qualtrics] table or a client")
                self._client = QualtricsClient.from_settings(self._qualtrics, clock=self.clock)
                self._owns_client = True
            return self._client

    def _claim(
        self, pool: str, *, recipient: str, key: str | None, data: Mapping[str, Any] | None
    ) -> Claim:
        settings = self.pool(pool)
        request = self._request(settings, recipient, key, data)
        if os.getpid() != self._pid:
            self._adopt_after_fork()
        try:
            record = self.store.claim(request)
        except DuplicateRecord:
            record = None  # the key was used already: fall through to the lookup
        if record is not None:
            return _claim_from_record(record)
        if key is not None:
            earlier = self.store.claim_by_key(pool, key)
            if earlier is not None:
                return self._replay(earlier, request)
        counts = self.counts(pool)
        raise PoolExhausted(pool, too_old=counts.too_old)

    def forget(self, recipient: str) -> ForgetReport:
        """Erase ``recipient`` from every claim of every pool (see ``linkpool.forget``): the
        links stay claimed; their contacts in Qualtrics are cleared now, or by the next
        ``sync`` when Qualtrics does not answer (the report says which)."""
        return forget(
            self.store,
            recipient,
            self.clock,
            client=self.qualtrics_client() if self._qualtrics or self._client else None,
            pools=self.pools,
            sync_settings=self.sync_settings,
        )

    def _replay(self, earlier: ClaimRecord, request: ClaimRequest) -> Claim:
        """The first claim of a repeated key; never a link that no longer opens."""
        if earlier.recipient != request.recipient or earlier.data != request.data:
            raise IdempotencyConflict(request.pool, request.key or "")
        claim = _claim_from_record(earlier, replayed=True)
        if earlier.expires_at <= request.now:
            raise ClaimExpired(claim, f"expired at {earlier.expires_at:%Y-%m-%d %H:%M} UTC")
        if self.store.list_deleted_for_link(earlier.id):
            raise ClaimExpired(claim, "lost its list: gc deleted it on Qualtrics")
        return claim

    def claim_by_key(self, pool: str, key: str) -> Claim | None:
        """The claim made in ``pool`` with idempotency ``key`` (``replayed`` set), or None."""
        self.pool(pool)
        if not isinstance(key, str):
            raise InvalidClaim("key must be a string")
        check_text("key", key, MAX_KEY_LENGTH)
        earlier = self.store.claim_by_key(pool, key)
        return _claim_from_record(earlier, replayed=True) if earlier is not None else None

    def claims_of(self, pool: str, recipient: str) -> list[Claim]:
        """Every claim of ``recipient`` in ``pool``, oldest first (``replayed`` set: these are
        earlier claims, looked up)."""
        self.pool(pool)
        if not isinstance(recipient, str):
            raise InvalidClaim("recipient must be a string")
        check_text("recipient", recipient, MAX_RECIPIENT_LENGTH)
        records = self.store.claims_of_recipient(pool, recipient)
        return [_claim_from_record(record, replayed=True) for record in records]

    def written_back(self, link_id: int) -> bool:
        """Whether the claim of ``link_id`` is written onto its contact in Qualtrics."""
        row = self.store.writeback_of(link_id)
        return row is not None and row.writeback == WriteBack.DONE

    def usable(self, claim: Claim) -> bool:
        """Whether ``claim``'s link still opens: unexpired, and its list not deleted."""
        if claim.expires_at <= self.clock.now():
            return False
        return not self.store.list_deleted_for_link(claim.link_id)

    def _adopt_after_fork(self) -> None:
        """Forget the parent's pooled connections without closing them under its feet."""
        self.engine.dispose(close=False)
        self._pid = os.getpid()

    def counts(self, pool: str) -> PoolCounts:
        settings = self.pool(pool)
        return self.store.counts(pool, self.clock.now(), settings.min_remaining)

    def response_counts(self, pool: str) -> ResponseCounts:
        """What ``linkpool responses`` found for ``pool``: answered claims, strays, enrichment."""
        self.pool(pool)
        return self.store.response_counts(pool, self.clock.now())

    def close(self) -> None:
        if self._owns_client and self._client is not None:
            self._client.close()
        self.engine.dispose()

    def __enter__(self) -> LinkPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def claim_request(
        self, pool: str, *, recipient: str, key: str | None, data: Mapping[str, Any] | None
    ) -> ClaimRequest:
        """What ``claim`` would send, checked (UnknownPool, InvalidClaim) but not sent: for a
        claim statement run elsewhere (``linkpool serve`` runs it on its event loop)."""
        return self._request(self.pool(pool), recipient, key, data)

    @staticmethod
    def claim_of(record: ClaimRecord) -> Claim:
        """The Claim a claimed row is (what ``claim`` returns for it)."""
        return _claim_from_record(record)

    def _request(
        self,
        settings: PoolSettings,
        recipient: str,
        key: str | None,
        data: Mapping[str, Any] | None,
    ) -> ClaimRequest:
        check_recipient(recipient)
        if key is not None and (not isinstance(key, str) or not key.strip()):
            raise InvalidClaim("key must be a non-empty string when given")
        if key is not None:
            check_text("key", key, MAX_KEY_LENGTH)
        now = self.clock.now()
        return ClaimRequest(
            pool=settings.name,
            recipient=recipient,
            key=key,
            data=canonical_json(data),
            now=now,
            cutoff=now + settings.min_remaining,
            writeback=WriteBack.PENDING if settings.writes_contact else None,
        )


def _engine_for(database_url: str | None) -> Engine:
    if database_url is None:
        raise ConfigError("LinkPool needs a database_url or an engine")
    return create_engine(database_url)


def _claim_from_record(record: ClaimRecord, *, replayed: bool = False) -> Claim:
    return Claim(
        pool=record.pool,
        recipient=record.recipient,
        key=record.idempotency_key,
        data=json.loads(record.data) if record.data is not None else None,
        url=normal_link(record.url),  # stored before links were normalised on the way in
        expires_at=record.expires_at,
        contact_id=record.contact_id,
        contact_lookup_id=record.contact_lookup_id,
        claimed_at=record.claimed_at,
        link_id=record.id,
        replayed=replayed,
    )


__all__ = ["Claim", "LinkPool", "canonical_json"]
