"""Fencing: a lease holder's writes commit only while it still holds its lease.

A holder that froze (SIGSTOP, a stalled VM) past its lease and was overtaken may wake up in the
middle of its work. Its heartbeat then fails, but a write already on its way must not land:
every write transaction of a fenced ``Store`` first reads the lease row and raises
``LeaseLost``, writing nothing, unless the row still names this holder. On PostgreSQL the row
is read ``FOR SHARE``, so a takeover (an UPDATE of that row) waits for the write to commit, or
the write sees the new holder; on SQLite the write transaction holds the database's write lock
from ``BEGIN IMMEDIATE`` on, which serialises it with a takeover in the same way.

The holder id is the fencing token: each ``Lease`` has its own (``host:pid:random``), and a
takeover replaces it, so a row that still names us proves nobody took over meanwhile.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from linkpool.errors import LeaseLost
from linkpool.models import leases


@dataclass(frozen=True)
class LeaseFence:
    """What a write checks: lease ``name`` is held by ``holder``. ``check_locally`` runs first,
    without the database (the holder's own view: lost, or past its deadline); ``lost`` tells
    the holder when the row says otherwise, so that it stops calling Qualtrics too."""

    name: str
    holder: str
    check_locally: Callable[[], None]
    lost: Callable[[], None]


def verify_fences(connection: Connection, fences: tuple[LeaseFence, ...]) -> None:
    """Raise LeaseLost (rolling the transaction back) unless every fence still holds."""
    postgres = connection.dialect.name == "postgresql"
    for fence in fences:
        fence.check_locally()
        query = sa.select(leases.c.holder).where(leases.c.name == fence.name)
        if postgres:
            query = query.with_for_update(read=True)
        holder = connection.execute(query).scalar()
        if holder != fence.holder:
            fence.lost()
            raise LeaseLost(
                f"lease {fence.name!r} was taken over by {holder or 'nobody (it was freed)'}; "
                "this run stopped without writing",
                lease=fence.name,
            )


__all__ = ["LeaseFence", "verify_fences"]
