"""The document of ``linkpool status --json`` and ``GET /v1/pools``: one function for both."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from linkpool.pool import LinkPool
from linkpool.status import pool_status


def pools_report(lp: LinkPool, names: Iterable[str] | None = None) -> dict[str, dict[str, Any]]:
    """Each pool's status entry by name (every configured pool, or only ``names``)."""
    wanted = lp.pools if names is None else [name for name in lp.pools if name in set(names)]
    return {name: pool_status(lp.counts(name), lp.pools[name]) for name in wanted}


def status_document(lp: LinkPool, names: Iterable[str] | None = None) -> dict[str, Any]:
    return {"pools": pools_report(lp, names)}
