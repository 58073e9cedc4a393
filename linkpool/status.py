"""What ``linkpool status`` reports, as plain data: the JSON shape is pinned for monitoring."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

from linkpool.config import PoolSettings
from linkpool.store import PoolCounts, ResponseCounts, Store

OK, LOW, EMPTY = "OK", "LOW", "EMPTY"


def health(counts: PoolCounts, pool: PoolSettings) -> str:
    """EMPTY when nothing can be claimed, LOW below low_water, else OK."""
    if counts.claimable == 0:
        return EMPTY
    if counts.claimable < pool.low_water:
        return LOW
    return OK


def pool_status(counts: PoolCounts, pool: PoolSettings) -> dict[str, Any]:
    """One pool's entry of ``status --json``. Keys are documented in docs/status.md."""
    return {
        "claimable": counts.claimable,
        "available": counts.available,
        "too_old": counts.too_old,
        "claimed": counts.claimed,
        "claimed_24h": counts.claimed_24h,
        "expired": counts.expired,
        "void": counts.void,
        "health": health(counts, pool),
        "low_water": pool.low_water,
        "target_available": pool.target_available,
        "lists": list(counts.lists),
        "writeback_pending": counts.writeback_pending,
        "writeback_failed": counts.writeback_failed,
    }


def pools_report(
    pools: Mapping[str, PoolSettings],
    counts: Callable[[str], PoolCounts],
    names: Iterable[str] | None = None,
    responses: Callable[[str], ResponseCounts] | None = None,
) -> dict[str, dict[str, Any]]:
    """Each pool's entry by name: every configured pool, or those of ``names`` (in the
    configuration's order), with its responses when ``responses`` is given. ``linkpool status
    --json`` and ``GET /v1/pools`` both print it."""
    wanted = pools if names is None else [name for name in pools if name in set(names)]
    report = {}
    for name in wanted:
        stock = counts(name)
        report[name] = pool_status(stock, pools[name])
        if responses is not None:
            report[name].update(response_status(responses(name), stock))
    return report


def response_status(responses: ResponseCounts, counts: PoolCounts) -> dict[str, Any]:
    """The response entries of a pool's ``status --json`` (docs/status.md): answered claims,
    the response rate (answered / claimed, None before any claim), responses on unclaimed
    links, and enrichment still to do or given up."""
    return {
        "answered": responses.answered,
        "answered_24h": responses.answered_24h,
        "finished": responses.finished,
        "response_rate": round(responses.answered / counts.claimed, 4) if counts.claimed else None,
        "responses_on_unclaimed_links": responses.unclaimed_responses,
        "enrichment_pending": responses.enrichment_open,
        "enrichment_failed": responses.enrichment_failed,
    }


RECENT_FAILURES = 5
"""How many of a pool's failed lists ``status POOL`` shows, newest first."""


def pool_detail(store: Store, pool: str, *, refill_lock: str, now: datetime) -> dict[str, Any]:
    """Why a pool is where it is (``status POOL``): who holds its refill lock and since when,
    when its refill last succeeded, and its newest failed lists with their last error."""
    lease = store.lease_record(refill_lock)
    success = store.last_success("refill", pool)
    return {
        "refill_lock": None
        if lease is None
        else {
            "holder": lease.holder,
            "since": lease.acquired_at.isoformat(),
            "expires_at": lease.expires_at.isoformat(),
            "lapsed": lease.expires_at < now,
        },
        "last_refill_success": success.isoformat() if success is not None else None,
        "failed_lists": [
            {
                "list": row.id,
                "mailing_list_id": row.mailing_list_id,
                "state": str(row.state),
                "at": row.updated_at.isoformat(),
                "error": row.last_error,
            }
            for row in store.recent_failures(pool, limit=RECENT_FAILURES)
        ],
    }
