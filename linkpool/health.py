"""Is linkpool healthy? The one place that says so: ``linkpool status --check``, and what the
service's ``/readyz`` and the metrics alerts build on.

A pool is unhealthy when it is LOW or EMPTY, when write-backs failed, or when no refill has
succeeded for it within ``max_intervals`` refill intervals (refill records each success in
``job_successes``; a run that skipped the pool because another holds it records nothing).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from linkpool.config import PoolSettings
from linkpool.status import OK, health
from linkpool.store import PoolCounts, Store

DEFAULT_MAX_INTERVALS = 3
"""No refill success for this many refill intervals is a failed check."""
CHECK_FAILED_EXIT = 4
"""``status --check``'s exit code when a check failed (0 when all pass)."""


@dataclass(frozen=True)
class Finding:
    """One failed check of one pool."""

    pool: str
    check: str  # "stock", "writeback" or "refill"
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"pool": self.pool, "check": self.check, "message": self.message}


def pool_findings(
    pool: PoolSettings,
    counts: PoolCounts,
    last_refill: datetime | None,
    *,
    now: datetime,
    refill_interval: timedelta,
    max_intervals: int = DEFAULT_MAX_INTERVALS,
) -> list[Finding]:
    """What is wrong with one pool, from figures already read (no query of its own)."""
    findings = []
    state = health(counts, pool)
    if state != OK:
        findings.append(
            Finding(
                pool.name,
                "stock",
                f"{state}: {counts.claimable} claimable, low_water {pool.low_water}",
            )
        )
    if counts.writeback_failed:
        findings.append(
            Finding(
                pool.name,
                "writeback",
                f"{counts.writeback_failed} write-back(s) failed: "
                "see `linkpool sync --retry-failed`",
            )
        )
    window = refill_interval * max_intervals
    if last_refill is None:
        findings.append(Finding(pool.name, "refill", "no refill has succeeded yet"))
    elif now - last_refill > window:
        findings.append(
            Finding(
                pool.name,
                "refill",
                f"no refill has succeeded since {last_refill.isoformat()} "
                f"({max_intervals} interval(s) of {_minutes(refill_interval)})",
            )
        )
    return findings


def check(
    store: Store,
    pools: Mapping[str, PoolSettings],
    *,
    now: datetime,
    refill_interval: timedelta,
    max_intervals: int = DEFAULT_MAX_INTERVALS,
) -> list[Finding]:
    """Every pool's findings; an empty list means healthy. Raises DatabaseError when the
    database cannot be read (which is itself a failed check, reported by the caller)."""
    findings = []
    for name, pool in pools.items():
        counts = store.counts(name, now, pool.min_remaining)
        findings += pool_findings(
            pool,
            counts,
            store.last_success("refill", name),
            now=now,
            refill_interval=refill_interval,
            max_intervals=max_intervals,
        )
    return findings


def check_document(findings: list[Finding]) -> dict[str, Any]:
    return {"ok": not findings, "problems": [finding.to_dict() for finding in findings]}


def _minutes(interval: timedelta) -> str:
    seconds = int(interval.total_seconds())
    return f"{seconds // 60}m" if seconds % 60 == 0 else f"{seconds}s"


__all__ = [
    "CHECK_FAILED_EXIT",
    "DEFAULT_MAX_INTERVALS",
    "Finding",
    "check",
    "check_document",
    "pool_findings",
]
