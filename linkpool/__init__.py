"""linkpool: pre-provisioned Qualtrics personal survey links, claimed in one database statement.

This module is the public surface (``__all__``, pinned by tests/unit/test_exported_members.py);
everything else is linkpool's own plumbing and may change between versions.

from linkpool import LinkPool
lp = LinkPool.from_config("linkpool.toml")
claim = lp.claim("nps-checkin", recipient="cust-42", key="txn-981", data={"store": "12"})
"""

from linkpool.claimer import Claim, Claimer, ClaimExpired
from linkpool.clock import Clock, ManualClock, SystemClock
from linkpool.config import PoolSettings, Settings, load_settings
from linkpool.errors import (
    ConfigError,
    DatabaseError,
    DuplicateRecord,
    IdempotencyConflict,
    InvalidClaim,
    LinkPoolError,
    PoolExhausted,
    QualtricsError,
    SchemaNotMigrated,
    UnknownPool,
)
from linkpool.forget import ForgetReport
from linkpool.pool import LinkPool
from linkpool.remote import RemotePool
from linkpool.store import PoolCounts

__all__ = [
    "Claim",
    "ClaimExpired",
    "Claimer",
    "Clock",
    "ConfigError",
    "DatabaseError",
    "DuplicateRecord",
    "ForgetReport",
    "IdempotencyConflict",
    "InvalidClaim",
    "LinkPool",
    "LinkPoolError",
    "ManualClock",
    "PoolCounts",
    "PoolExhausted",
    "PoolSettings",
    "QualtricsError",
    "RemotePool",
    "SchemaNotMigrated",
    "Settings",
    "SystemClock",
    "UnknownPool",
    "load_settings",
]
