"""Every query linkpool runs, in one package, split by table group.

``Store`` wraps an engine and is the only door: it combines the queries on claims, lists (with
their links), leases, write-backs, erasures, job successes and the service's API keys,
returns frozen records (``linkpool.store.records``) and raises linkpool's own errors; no
SQLAlchemy row or exception leaves this package and ``db``.
Callers pass times in; the store never reads a clock, so every decision about "now" is made
(and injectable) one level up.
"""

from __future__ import annotations

from linkpool.store.archive import ArchiveQueries
from linkpool.store.claims import ClaimQueries
from linkpool.store.erasures import ErasureQueries
from linkpool.store.fencing import LeaseFence
from linkpool.store.keys import KeyQueries
from linkpool.store.leases import LeaseQueries
from linkpool.store.lists import ListQueries
from linkpool.store.records import (
    ApiKeyRecord,
    ArchivedClaim,
    ClaimRecord,
    ClaimRequest,
    ErasedClaim,
    ErasureOutcome,
    ErasureRecord,
    ExportedClaim,
    LeaseRecord,
    ListRecord,
    NewLink,
    PoolCounts,
    WriteBackOutcome,
    WriteBackRecord,
)
from linkpool.store.responses import (
    AnsweredLink,
    CursorRecord,
    EnrichmentItem,
    ResponseChange,
    ResponseCounts,
    ResponseQueries,
    StrayResponse,
    UpdateRecord,
)
from linkpool.store.successes import SuccessQueries
from linkpool.store.writebacks import WriteBackQueries


class Store(
    ClaimQueries,
    ListQueries,
    LeaseQueries,
    WriteBackQueries,
    SuccessQueries,
    ErasureQueries,
    KeyQueries,
    ArchiveQueries,
    ResponseQueries,
):
    """All of linkpool's queries on one engine (see the table-group modules)."""


__all__ = [
    "ApiKeyRecord",
    "ArchivedClaim",
    "AnsweredLink",
    "ClaimRecord",
    "CursorRecord",
    "EnrichmentItem",
    "ResponseChange",
    "ResponseCounts",
    "StrayResponse",
    "UpdateRecord",
    "ClaimRequest",
    "ErasedClaim",
    "ErasureOutcome",
    "ErasureRecord",
    "ExportedClaim",
    "LeaseFence",
    "LeaseRecord",
    "ListRecord",
    "NewLink",
    "PoolCounts",
    "Store",
    "WriteBackOutcome",
    "WriteBackRecord",
]
