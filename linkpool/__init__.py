"""linkpool: pre-provisioned Qualtrics personal survey links, claimed in one database statement.

from linkpool import LinkPool
lp = LinkPool.from_config("linkpool.toml")
claim = lp.claim("nps-checkin", recipient="cust-42", key="txn-981", data={"store": "12"})
"""

from linkpool.clock import Clock, ManualClock, SystemClock
from linkpool.config import PoolSettings, Settings, load_settings
from linkpool.errors import (
    ConfigError,
    DatabaseError,
    IdempotencyConflict,
    InvalidClaim,
    LinkPoolError,
    PoolExhausted,
    QualtricsError,
    SchemaNotMigrated,
    UnknownPool,
)
from linkpool.pool import Claim, LinkPool
from linkpool.store import PoolCounts

__all__ = [
    "Claim",
    "Clock",
    "ConfigError",
    "DatabaseError",
    "IdempotencyConflict",
    "InvalidClaim",
    "LinkPool",
    "LinkPoolError",
    "ManualClock",
    "PoolCounts",
    "PoolExhausted",
    "PoolSettings",
    "QualtricsError",
    "SchemaNotMigrated",
    "Settings",
    "SystemClock",
    "UnknownPool",
    "load_settings",
]
