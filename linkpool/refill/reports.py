"""What a refill did (or, in a dry run, would do): per pool, and for the whole run."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from linkpool.job import JobReport


@dataclass
class PoolReport(JobReport):
    """What a refill did (or, in a dry run, would do) for one pool."""

    pool: str
    claimable_before: int = 0
    claimable_after: int = 0
    lists_resumed: int = 0
    lists_planned: int = 0
    links_planned: int = 0
    lists_created: int = 0
    lists_ready: int = 0
    lists_failed: int = 0
    links_added: int = 0
    links_missing: int = 0
    """Links of stored lists that the links listing never returned (or that were skipped)."""
    shortfall: int = 0
    """What is still missing to ``target_available`` after the run."""
    api_calls: Counter[str] = field(default_factory=Counter)
    duration_s: float = 0.0
    errors: list[str] = field(default_factory=list)
    skipped: str | None = None
    stopped: bool = False
    """Asked to stop (a signal, the daemon's shutdown) before the pool was done."""
    not_figures = ("pool",)

    @property
    def failed(self) -> bool:
        return self.has_errors

    def summary_parts(self) -> list[str]:
        if self.skipped:
            return [f"skipped, {self.skipped}"]
        return [
            f"claimable {self.claimable_before} -> {self.claimable_after}",
            f"{self.lists_ready} list(s) ready",
            f"{self.lists_failed} failed",
            f"{self.links_added} link(s) added",
            f"shortfall {self.shortfall}",
            *(["stopped"] if self.stopped else []),
        ]


@dataclass
class RefillReport(JobReport):
    """A whole run: one ``PoolReport`` per pool. Its API calls and errors are the pools'."""

    pools: list[PoolReport]
    dry_run: bool = False
    duration_s: float = 0.0
    api_calls: Counter[str] = field(init=False)
    errors: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.api_calls = Counter()
        for pool in self.pools:
            self.api_calls.update(pool.api_calls)
        self.errors = [error for pool in self.pools for error in pool.errors]

    @property
    def exit_code(self) -> int:
        """1 if any pool failed, else 0 (a pool skipped as already running is not a failure)."""
        return 1 if any(pool.failed for pool in self.pools) else 0

    def figures(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "pools": {pool.pool: pool.to_dict() for pool in self.pools},
            "duration_s": round(self.duration_s, 3),
            "exit_code": self.exit_code,
        }

    def summary_parts(self) -> list[str]:
        return [
            f"{len(self.pools)} pool(s)",
            f"{sum(p.lists_ready for p in self.pools)} list(s) ready",
            f"{sum(p.links_added for p in self.pools)} link(s) added",
            f"shortfall {sum(p.shortfall for p in self.pools)}",
            f"{sum(1 for p in self.pools if p.skipped)} skipped",
        ]

    def counters(self) -> dict[str, float]:
        """The pools' counters added up."""
        totals: Counter[str] = Counter()
        for pool in self.pools:
            totals.update(pool.counters())
        return {**dict(totals), "pools": float(len(self.pools))}


__all__ = ["PoolReport", "RefillReport"]
