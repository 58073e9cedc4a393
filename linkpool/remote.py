"""``RemotePool``: claim over HTTP from a ``linkpool serve``, with LinkPool's method names.

    pool = RemotePool("https://links.internal", api_key=os.environ["LINKPOOL_API_KEY"])
    claim = pool.claim("nps-checkin", recipient="cust-42", key="txn-981", data={"store": "12"})

It returns the same ``Claim`` objects and raises the same exceptions as ``LinkPool``
(PoolExhausted, IdempotencyConflict, UnknownPool, InvalidClaim, DatabaseError), so switching
between in-process and remote claiming is one line. A claim is retried after a connection
failure only when it carries an idempotency key: without one, a retry of a request the server
did receive would hand out a second link.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx

from linkpool.claimer import Claim
from linkpool.errors import (
    ConfigError,
    DatabaseError,
    IdempotencyConflict,
    InvalidClaim,
    LinkPoolError,
    PoolExhausted,
    UnknownPool,
)
from linkpool.store import PoolCounts

DEFAULT_TIMEOUT = 10.0
DEFAULT_RETRIES = 3
RETRY_BACKOFF = 0.2  # seconds, doubled at each attempt


class RemoteError(LinkPoolError):
    """The linkpool service answered with something unexpected."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class KeyRefused(RemoteError, ConfigError):
    """The service refused the API key (401) or its scope (403): check api_key."""


class ServiceUnreachable(RemoteError):
    """The linkpool service could not be reached: check base_url and that it runs."""


def _rebuild(kind: str, message: str, error: Mapping[str, Any], status: int) -> LinkPoolError:
    """The exception the server raised, from its error body."""
    pool = str(error.get("pool", ""))
    if kind == "PoolExhausted":
        return PoolExhausted(pool, too_old=int(error.get("too_old", 0)))
    if kind == "IdempotencyConflict":
        return IdempotencyConflict(pool, str(error.get("key", "")))
    builders: dict[str, Callable[[], LinkPoolError]] = {
        "UnknownPool": lambda: UnknownPool(pool, []),
        "InvalidClaim": lambda: InvalidClaim(message),
        "DatabaseError": lambda: DatabaseError(message),
        "SchemaNotMigrated": lambda: DatabaseError(message),
    }
    if kind in builders:
        exc = builders[kind]()
        exc.message = message
        exc.args = (message,)
        return exc
    if status in (401, 403):
        return KeyRefused(message, status_code=status)
    return RemoteError(f"the service answered {status}: {message}", status_code=status)


def _claim_from_json(body: Mapping[str, Any]) -> Claim:
    return Claim(
        pool=body["pool"],
        recipient=body["recipient"],
        key=body["key"],
        data=body["data"],
        url=body["url"],
        expires_at=datetime.fromisoformat(body["expires_at"]),
        contact_id=body["contact_id"],
        contact_lookup_id=body.get("contact_lookup_id"),
        claimed_at=datetime.fromisoformat(body["claimed_at"]),
        link_id=int(body["link_id"]),
        replayed=bool(body["replayed"]),
    )


_COUNT_FIELDS = [name for name in PoolCounts.__dataclass_fields__ if name != "lists"]


class RemotePool:
    """A Claimer over HTTP. Safe to share between threads (one httpx.Client)."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.retries = retries
        self._sleep = sleep
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=timeout,
            transport=transport,
        )

    def claim(
        self,
        pool: str,
        *,
        recipient: str,
        key: str | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> Claim:
        headers = {"Idempotency-Key": key} if key is not None else {}
        body = {"recipient": recipient, "data": dict(data) if data is not None else None}
        response = self._send(
            "POST", f"/v1/pools/{pool}/claims", json=body, headers=headers, safe=key is not None
        )
        return _claim_from_json(response.json())

    def claim_by_key(self, pool: str, key: str) -> Claim | None:
        response = self._send(
            "GET", f"/v1/pools/{pool}/claims/{quote(key, safe='')}", safe=True, missing_ok=True
        )
        return None if response.status_code == 404 else _claim_from_json(response.json())

    def counts(self, pool: str) -> PoolCounts:
        entry = self._send("GET", f"/v1/pools/{pool}", safe=True).json()
        values = {name: int(entry[name]) for name in _COUNT_FIELDS}
        return PoolCounts(**values, lists=tuple(entry["lists"]))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RemotePool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _send(
        self, method: str, path: str, *, safe: bool, missing_ok: bool = False, **kwargs: Any
    ) -> httpx.Response:
        """One request; retried on a connection failure only when ``safe`` (idempotent)."""
        attempts = 1 + (self.retries if safe else 0)
        for attempt in range(attempts):
            try:
                response = self._http.request(method, path, **kwargs)
                break
            except httpx.TransportError as exc:
                if attempt + 1 == attempts:
                    raise ServiceUnreachable(
                        f"{method} {path} failed: {type(exc).__name__}"
                        + (
                            ""
                            if safe
                            else " (not retried: a claim without a key is not safe to repeat)"
                        )
                    ) from None
                self._sleep(RETRY_BACKOFF * 2**attempt)
        if response.is_success or (missing_ok and _is_claim_not_found(response)):
            return response
        raise self._error(response)

    @staticmethod
    def _error(response: httpx.Response) -> LinkPoolError:
        try:
            error = response.json()["error"]
            kind, message = str(error["type"]), str(error["message"])
        except (ValueError, KeyError, TypeError):
            return RemoteError(
                f"the service answered {response.status_code} without an error body",
                status_code=response.status_code,
            )
        return _rebuild(kind, message, error, response.status_code)


def _is_claim_not_found(response: httpx.Response) -> bool:
    try:
        return bool(
            response.status_code == 404 and response.json()["error"]["type"] == "ClaimNotFound"
        )
    except (ValueError, KeyError, TypeError):
        return False
