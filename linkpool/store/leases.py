"""Queries on ``leases``: named locks with an expiry."""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa

from linkpool.errors import DatabaseError, DuplicateRecord, LeaseInDoubt
from linkpool.models import leases
from linkpool.store.base import StoreBase
from linkpool.store.records import LeaseRecord

TAKEOVER_LOCK_WAIT = "1s"
"""On PostgreSQL, how long a takeover waits for a lapsed lease's row locked by its holder's
fenced write (``FOR SHARE``), which takes milliseconds unless the holder froze mid-write."""


def _lock_timed_out(error: sa.exc.OperationalError) -> bool:
    return getattr(error.orig, "sqlstate", None) == "55P03"  # lock_not_available


class LeaseQueries(StoreBase):
    def acquire_lease(self, name: str, holder: str, *, now: datetime, ttl: timedelta) -> bool:
        """Take the lease if it is free, lapsed, or already ours; True when we hold it."""
        if self.renew_lease(name, holder, now=now, ttl=ttl, take_lapsed=True):
            return True
        try:
            with self.write() as connection:
                connection.execute(
                    sa.insert(leases).values(
                        name=name, holder=holder, acquired_at=now, expires_at=now + ttl
                    )
                )
        except DuplicateRecord:
            return False  # another holder inserted it first
        return True

    def renew_lease(
        self,
        name: str,
        holder: str,
        *,
        now: datetime,
        ttl: timedelta,
        take_lapsed: bool = False,
    ) -> bool:
        """Extend our lease; with ``take_lapsed`` also take one whose holder let it lapse."""
        ours = leases.c.holder == holder
        condition = sa.or_(ours, leases.c.expires_at < now) if take_lapsed else ours
        statement = (
            sa.update(leases)
            .where(leases.c.name == name, condition)
            .values(
                holder=holder,
                expires_at=now + ttl,
                acquired_at=sa.case((ours, leases.c.acquired_at), else_=now),
            )
        )
        try:
            with self.write() as connection:
                if take_lapsed and self._postgres:
                    connection.execute(sa.text(f"SET LOCAL lock_timeout = '{TAKEOVER_LOCK_WAIT}'"))
                return connection.execute(statement).rowcount == 1
        except DatabaseError as exc:
            if isinstance(exc.__cause__, sa.exc.OperationalError) and _lock_timed_out(
                exc.__cause__
            ):
                raise LeaseInDoubt(
                    f"lease {name!r} lapsed, but its holder's write transaction has kept its "
                    f"row locked for over {TAKEOVER_LOCK_WAIT} (a holder frozen in the middle "
                    "of a write): it is taken over once that process resumes or is killed",
                    lease=name,
                ) from None
            raise

    def release_lease(self, name: str, holder: str) -> None:
        with self.write() as connection:
            connection.execute(
                sa.delete(leases).where(leases.c.name == name, leases.c.holder == holder)
            )

    def lease_record(self, name: str) -> LeaseRecord | None:
        """The lease's row, lapsed or not; None when nobody holds it."""
        with self.read() as connection:
            row = connection.execute(sa.select(leases).where(leases.c.name == name)).mappings()
            found = row.first()
        return LeaseRecord.from_row(found) if found is not None else None

    def lease_holder(self, name: str, *, now: datetime) -> str | None:
        query = sa.select(leases.c.holder).where(leases.c.name == name, leases.c.expires_at >= now)
        with self.read() as connection:
            holder: str | None = connection.execute(query).scalar()
            return holder

    def live_leases(self, *, now: datetime) -> dict[str, str]:
        """Every lease not lapsed: its name and holder (what the daemon's metrics show)."""
        query = sa.select(leases.c.name, leases.c.holder).where(leases.c.expires_at >= now)
        with self.read() as connection:
            return {name: holder for name, holder in connection.execute(query.order_by("name"))}


__all__: list[str] = []  # internal: see linkpool.store.Store
