"""What the store hands out and takes in: frozen records of linkpool's own types.

Callers never see SQLAlchemy rows: each query maps its row onto one of these, by column name
(``from_row``), so a column's position in a SELECT never matters.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, Self

from linkpool.models import Erasure, ListState, WriteBack


class Record:
    """A frozen dataclass built from a row by field name."""

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> Self:
        return cls(**{f.name: row[f.name] for f in fields(cls)})  # type: ignore[arg-type]


@dataclass(frozen=True)
class ClaimRequest:
    pool: str
    recipient: str
    key: str | None
    data: str | None  # canonical JSON text
    now: datetime
    cutoff: datetime  # links must expire at or after this to be handed out
    writeback: WriteBack | None = WriteBack.PENDING  # None: the pool writes nothing to contacts


@dataclass(frozen=True)
class ClaimRecord(Record):
    """A claimed link, as the claim statement (or the lookup by key) returns it. ``url`` is a
    bearer credential: it is kept out of ``repr``."""

    id: int
    pool: str
    url: str = field(repr=False)
    expires_at: datetime
    contact_id: str
    contact_lookup_id: str | None
    recipient: str
    idempotency_key: str | None
    data: str | None  # canonical JSON text
    claimed_at: datetime


@dataclass(frozen=True)
class ExportedClaim(Record):
    """One claim with the Qualtrics ids of its list and distribution (``linkpool export``)."""

    link_id: int
    recipient: str | None  # None once ``forget`` erased it (``erased_at``)
    idempotency_key: str | None
    data: str | None
    claimed_at: datetime
    erased_at: datetime | None
    url: str = field(repr=False)
    expires_at: datetime
    contact_id: str
    contact_lookup_id: str | None
    ext_ref: str
    writeback: WriteBack | None
    response_id: str | None
    response_finished: bool | None
    responded_at: datetime | None
    mailing_list_id: str | None
    distribution_id: str | None
    survey_id: str

    def __post_init__(self) -> None:
        if self.writeback is not None:
            object.__setattr__(self, "writeback", WriteBack(self.writeback))


@dataclass(frozen=True)
class ArchivedClaim(ExportedClaim):
    """An exported claim and its pool (``linkpool archive`` takes every pool at once)."""

    pool: str


@dataclass(frozen=True)
class ListRecord(Record):
    """One Qualtrics mailing list we made (or are making), with its provisioning state."""

    id: int
    pool: str
    survey_id: str
    name: str
    state: ListState
    size: int
    mailing_list_id: str | None
    import_id: str | None
    distribution_id: str | None
    expires_at: datetime | None
    links_stored: int
    shortfall: int
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None
    last_error: str | None

    def __post_init__(self) -> None:
        object.__setattr__(self, "state", ListState(self.state))


@dataclass(frozen=True)
class NewLink:
    """A personal link read from Qualtrics, to be stored available (``Store.finish_list``)."""

    ext_ref: str
    contact_id: str
    contact_lookup_id: str | None
    url: str = field(repr=False)
    expires_at: datetime


@dataclass(frozen=True)
class WriteBackRecord(Record):
    """A claim whose recipient and data are (to be) written onto its placeholder contact."""

    id: int
    pool: str
    contact_id: str
    ext_ref: str
    recipient: str
    data: str | None
    writeback: WriteBack | None
    writeback_attempts: int
    mailing_list_id: str | None
    list_state: ListState

    def __post_init__(self) -> None:
        object.__setattr__(self, "list_state", ListState(self.list_state))
        if self.writeback is not None:
            object.__setattr__(self, "writeback", WriteBack(self.writeback))


@dataclass(frozen=True)
class WriteBackOutcome:
    """What one write-back attempt left: the values ``Store.record_writebacks`` stores."""

    link_id: int
    state: WriteBack
    attempts: int
    due_at: datetime | None
    error: str | None


@dataclass(frozen=True)
class ErasedClaim:
    """A claim ``forget`` just erased, and whether its contact still needs clearing."""

    link_id: int
    pool: str
    erasure: Erasure | None  # None: no write-back ever ran, nothing to clear


@dataclass(frozen=True)
class ErasureRecord(Record):
    """A forgotten claim whose placeholder contact is (to be) cleared in Qualtrics."""

    id: int
    pool: str
    contact_id: str
    ext_ref: str
    erasure_fields: str | None  # JSON list of the data keys to empty
    erasure_attempts: int
    mailing_list_id: str | None
    list_state: ListState

    def __post_init__(self) -> None:
        object.__setattr__(self, "list_state", ListState(self.list_state))

    @property
    def data_keys(self) -> list[str]:
        return list(json.loads(self.erasure_fields)) if self.erasure_fields else []


@dataclass(frozen=True)
class ErasureOutcome:
    """What one clearing attempt left: the values ``Store.record_erasures`` stores."""

    link_id: int
    state: Erasure
    attempts: int
    due_at: datetime | None
    error: str | None


@dataclass(frozen=True)
class PoolCounts:
    available: int
    claimable: int
    claimed: int
    claimed_24h: int
    expired: int
    void: int
    writeback_pending: int
    writeback_failed: int
    lists: tuple[str, ...]

    @property
    def too_old(self) -> int:
        """Available links with less than ``min_remaining`` left: kept, never handed out."""
        return self.available - self.claimable


@dataclass(frozen=True)
class LeaseRecord(Record):
    """A lease row: who holds it (``host:pid:random``), since when, and until when."""

    name: str
    holder: str
    acquired_at: datetime
    expires_at: datetime


__all__ = [
    "ArchivedClaim",
    "ClaimRecord",
    "ClaimRequest",
    "ErasedClaim",
    "ErasureOutcome",
    "ErasureRecord",
    "ExportedClaim",
    "LeaseRecord",
    "ListRecord",
    "NewLink",
    "PoolCounts",
    "WriteBackOutcome",
    "WriteBackRecord",
]


@dataclass(frozen=True)
class ApiKeyRecord:
    """A key of the service as stored: its name, public prefix and scope, never the key."""

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
