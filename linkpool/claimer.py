"""The claim seam: what a claim is, and what anything that hands out claims offers.

``LinkPool`` (in-process, on the database) implements ``Claimer``; a remote client over HTTP
or an async pool fits beside it by implementing the same three methods, so an application
switches between them by changing one line.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from linkpool.errors import InvalidClaim, LinkPoolError
from linkpool.store import PoolCounts


@dataclass(frozen=True)
class Claim:
    """A personal link handed to one recipient. ``url`` is a bearer credential: it is kept
    out of ``repr`` so that logging a claim does not leak it."""

    pool: str
    recipient: str
    key: str | None
    data: Mapping[str, Any] | None
    url: str = field(repr=False)
    expires_at: datetime
    contact_id: str
    contact_lookup_id: str | None
    claimed_at: datetime
    link_id: int
    replayed: bool = False  # True when an idempotent repeat returned an earlier claim

    def to_dict(self) -> dict[str, Any]:
        return {
            "pool": self.pool,
            "recipient": self.recipient,
            "key": self.key,
            "data": self.data,
            "url": self.url,
            "expires_at": self.expires_at.isoformat(),
            "contact_id": self.contact_id,
            "contact_lookup_id": self.contact_lookup_id,
            "claimed_at": self.claimed_at.isoformat(),
            "link_id": self.link_id,
            "replayed": self.replayed,
        }


class ClaimExpired(LinkPoolError):
    """A repeat of an idempotency key whose claim can no longer be used: its link expired or
    its list was deleted, so the link no longer opens. ``claim`` is that first claim (for the
    record); the message never carries its URL. Claim with a new key for a new link."""

    def __init__(self, claim: Claim, reason: str) -> None:
        super().__init__(
            f"the claim made with idempotency key {claim.key!r} in pool {claim.pool!r} "
            f"(link #{claim.link_id}, claimed {claim.claimed_at:%Y-%m-%d %H:%M} UTC) {reason}: "
            "its link no longer opens; claim with a new key for a new link"
        )
        self.claim = claim
        self.pool = claim.pool
        self.key = claim.key


def check_text(name: str, value: str, max_length: int) -> None:
    """A recipient or key: non-empty text that every database stores and compares as given."""
    if not value.strip():
        raise InvalidClaim(f"{name} must be a non-empty string")
    if len(value) > max_length:
        raise InvalidClaim(f"{name} is longer than {max_length} characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidClaim(f"{name} is not valid Unicode (a lone surrogate)") from None
    if "\x00" in value:  # other control characters are stored and exported (CSV quotes them)
        raise InvalidClaim(f"{name} contains a NUL character, which PostgreSQL cannot store")


@runtime_checkable
class Claimer(Protocol):
    """Hands out links: the claim, the lookup of a claim by its idempotency key, the counts."""

    def claim(
        self,
        pool: str,
        *,
        recipient: str,
        key: str | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> Claim:
        """One available link of ``pool`` for ``recipient``; PoolExhausted if none is left,
        IdempotencyConflict if ``key`` was used with another recipient or data; ClaimExpired if
        ``key``'s claim can no longer be used (its link expired or its list was deleted)."""
        ...

    def claim_by_key(self, pool: str, key: str) -> Claim | None:
        """The claim made in ``pool`` with idempotency ``key``, or None (nothing claimed)."""
        ...

    def counts(self, pool: str) -> PoolCounts:
        """The pool's stock: claimable, too old, claimed…"""
        ...


__all__ = ["Claim", "ClaimExpired", "Claimer", "check_text"]
