"""Queries on ``lists`` and their links: provisioning (refill) and reaping (gc)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from linkpool.models import LinkStatus, ListState, links, lists
from linkpool.store.base import StoreBase
from linkpool.store.predicates import list_not_deleted
from linkpool.store.records import ListRecord, NewLink
from linkpool.store.totals import add_closed_totals, list_figures

DROP_CHUNK = 500
"""Rows per UPDATE when dropping planned lists (under every driver's parameter limit)."""


class ListQueries(StoreBase):
    # --- provisioning (refill writes them; tests seed through them) -------------------------

    def create_list(self, *, pool: str, survey_id: str, name: str, size: int, now: datetime) -> int:
        values = dict(
            pool=pool,
            survey_id=survey_id,
            name=name,
            size=size,
            state=ListState.PLANNED,
            created_at=now,
            updated_at=now,
        )
        with self.write() as connection:
            statement = sa.insert(lists).values(values).returning(lists.c.id)
            return int(connection.execute(statement).scalar_one())

    def update_list(self, list_id: int, *, now: datetime, **values: Any) -> None:
        with self.write() as connection:
            connection.execute(
                sa.update(lists).where(lists.c.id == list_id).values(updated_at=now, **values)
            )

    def get_list(self, list_id: int) -> ListRecord:
        with self.read() as connection:
            row = connection.execute(sa.select(lists).where(lists.c.id == list_id)).mappings()
            return ListRecord.from_row(row.one())

    def drop_planned_lists(self, list_ids: Sequence[int], *, now: datetime, reason: str) -> None:
        """Mark still-``planned`` lists failed with ``reason`` (gc then reaps their rows,
        looking each up by name in case its create did go through)."""
        for start in range(0, len(list_ids), DROP_CHUNK):
            chunk = list(list_ids[start : start + DROP_CHUNK])
            with self.write() as connection:
                connection.execute(
                    sa.update(lists)
                    .where(lists.c.id.in_(chunk), lists.c.state == ListState.PLANNED)
                    .values(state=ListState.FAILED, last_error=reason, updated_at=now)
                )

    def recent_failures(self, pool: str, *, limit: int) -> list[ListRecord]:
        """The pool's lists that failed (abandoned, whether gc reaped them yet or not), newest
        first: what an operator reads to learn why a pool is low."""
        query = (
            sa.select(lists)
            .where(
                lists.c.pool == pool,
                lists.c.last_error.is_not(None),
                lists.c.state != ListState.READY,
            )
            .order_by(lists.c.updated_at.desc(), lists.c.id.desc())
            .limit(limit)
        )
        with self.read() as connection:
            return [ListRecord.from_row(row) for row in connection.execute(query).mappings()]

    def lists_in_states(self, states: Iterable[str], pool: str | None = None) -> list[ListRecord]:
        wanted = list(states)
        query = sa.select(lists).where(lists.c.state.in_(wanted)).order_by(lists.c.id)
        if ListState.DELETED not in wanted:
            query = query.where(list_not_deleted())
        if pool is not None:
            query = query.where(lists.c.pool == pool)
        return self._list_records(query)

    def advance_list(
        self, list_id: int, *, expected_state: str, now: datetime, **values: Any
    ) -> bool:
        """Update a list only if it is still in ``expected_state``; False when it moved (a gc
        reaping a stuck list took it, say), so that two jobs never drive one list."""
        statement = (
            sa.update(lists)
            .where(lists.c.id == list_id, lists.c.state == expected_state)
            .values(updated_at=now, **values)
        )
        with self.write() as connection:
            return connection.execute(statement).rowcount == 1

    def finish_list(
        self,
        list_id: int,
        pool: str,
        new_links: Sequence[NewLink],
        *,
        now: datetime,
        shortfall: int,
    ) -> bool:
        """Store a distributed list's links as available and mark it ready, in one transaction.

        A list's links become claimable only once it is complete, so abandoning (deleting) an
        unfinished list can never break a link that was handed out. False, storing nothing,
        when the list is no longer ``distributed``.
        """
        with self.write() as connection:
            moved = connection.execute(
                sa.update(lists)
                .where(lists.c.id == list_id, lists.c.state == ListState.DISTRIBUTED)
                .values(
                    state=ListState.READY,
                    links_stored=len(new_links),
                    shortfall=shortfall,
                    last_error=None,
                    updated_at=now,
                )
            )
            if moved.rowcount != 1:
                return False
            if new_links:
                values = [
                    dict(asdict(link), list_id=list_id, pool=pool, status=LinkStatus.AVAILABLE)
                    for link in new_links
                ]
                connection.execute(sa.insert(links), values)
        return True

    def placeholder_contact_ids(self, list_id: int) -> list[str]:
        query = sa.select(links.c.contact_id).where(links.c.list_id == list_id).order_by(links.c.id)
        with self.read() as connection:
            return list(connection.execute(query).scalars())

    def known_mailing_lists(self) -> tuple[set[str], set[str]]:
        """(ids, names) of the lists the database still considers to exist on Qualtrics."""
        query = sa.select(lists.c.mailing_list_id, lists.c.name).where(list_not_deleted())
        with self.read() as connection:
            rows = connection.execute(query).all()
        return {row[0] for row in rows if row[0]}, {row[1] for row in rows}

    # --- reaping (gc) ------------------------------------------------------------------------

    @staticmethod
    def _holds_live_claim(now: datetime) -> sa.Exists:
        """True for a list holding a claimed link that has not expired: gc never touches one."""
        return sa.exists().where(
            links.c.list_id == lists.c.id,
            links.c.status == LinkStatus.CLAIMED,
            links.c.expires_at > now,
        )

    def lists_being_reaped(self, *, now: datetime) -> list[ListRecord]:
        """Lists a gc began deleting (perhaps a gc that was killed): they are finished first."""
        reaping = (ListState.REAPING, ListState.DISTRIBUTION_DELETED)
        return self._lists_where(lists.c.state.in_(reaping), ~self._holds_live_claim(now))

    def expired_lists(self, *, now: datetime, expired_before: datetime) -> list[ListRecord]:
        """Live lists whose links expired before ``expired_before`` and hold no unexpired claim."""
        return self._lists_where(
            lists.c.state.in_(ListState.LIVE),
            lists.c.expires_at <= expired_before,
            ~self._holds_live_claim(now),
        )

    def abandoned_lists(self, *, now: datetime, stale_before: datetime) -> list[ListRecord]:
        """Lists provisioning left behind: failed ones, and ones stuck in a provisioning state
        since before ``stale_before``; never one that holds an unexpired claim."""
        stuck = sa.and_(
            lists.c.state.in_(ListState.PROVISIONING), lists.c.updated_at < stale_before
        )
        return self._lists_where(
            sa.or_(lists.c.state == ListState.FAILED, stuck), ~self._holds_live_claim(now)
        )

    def _lists_where(self, *conditions: sa.ColumnElement[bool]) -> list[ListRecord]:
        """Lists not deleted that meet ``conditions`` (gc's candidates), read through the
        partial index over the lists not deleted."""
        query = (
            sa.select(lists)
            .where(list_not_deleted(), *conditions)
            .order_by(lists.c.expires_at, lists.c.id)
        )
        return self._list_records(query)

    def _list_records(self, query: sa.Select[Any]) -> list[ListRecord]:
        with self.read() as connection:
            return [ListRecord.from_row(row) for row in connection.execute(query).mappings()]

    def begin_reaping(self, list_id: int, *, state: str, now: datetime) -> int | None:
        """Void the list's unclaimed links and mark it ``reaping``, in one transaction.

        Returns how many links were voided, or None (nothing changed) when the list left
        ``state`` meanwhile or holds an unexpired claim. The links are voided *before* the
        claims are counted, so a claim that commits concurrently is either seen here or finds
        no available link of this list: after this returns a number, nothing in the list can
        be claimed, and nothing in it is claimed and unexpired.
        """
        try:
            with self.write() as connection:
                moved = connection.execute(
                    sa.update(lists)
                    .where(lists.c.id == list_id, lists.c.state == state)
                    .values(state=ListState.REAPING, updated_at=now)
                )
                if moved.rowcount != 1:
                    raise _Refused
                voided = connection.execute(
                    sa.update(links)
                    .where(links.c.list_id == list_id, links.c.status == LinkStatus.AVAILABLE)
                    .values(status=LinkStatus.VOID, voided_at=now)
                ).rowcount
                if self._count_live_claims(connection, list_id, now):
                    raise _Refused
        except _Refused:
            return None
        return int(voided)

    def close_list(self, list_id: int, *, now: datetime) -> bool:
        """Mark a reaped list deleted and add its claimed, void, answered and finished links
        to its pool's ``closed_list_totals``, in one transaction: from then on the pool's
        counts read the list's figures from that one row, not from its links (which archive
        may remove). A deleted list's links never change status, and a response arriving
        later on one of its claims is added to the row by the responses job, so the totals
        stay exact. False, adding nothing, when the list was already deleted."""
        with self.write() as connection:
            pool = connection.execute(
                sa.update(lists)
                .where(lists.c.id == list_id, lists.c.state != ListState.DELETED)
                .values(state=ListState.DELETED, deleted_at=now, updated_at=now)
                .returning(lists.c.pool)
            ).scalar_one_or_none()
            if pool is None:
                return False
            add_closed_totals(connection, pool, list_figures(connection, list_id))
        return True

    def live_claims(self, list_id: int, *, now: datetime) -> int:
        """How many claimed links of the list have not expired (gc checks before each delete)."""
        with self.read() as connection:
            return self._count_live_claims(connection, list_id, now)

    @staticmethod
    def _count_live_claims(connection: Connection, list_id: int, now: datetime) -> int:
        query = sa.select(sa.func.count()).where(
            links.c.list_id == list_id,
            links.c.status == LinkStatus.CLAIMED,
            links.c.expires_at > now,
        )
        return int(connection.execute(query).scalar_one())

    def unclaimable_links(self, pool: str, *, cutoff: datetime) -> int:
        """Available links of the pool expiring before ``cutoff``: never handed out any more."""
        query = sa.select(sa.func.count()).where(self._unclaimable(pool, cutoff))
        with self.read() as connection:
            return int(connection.execute(query).scalar_one())

    def void_unclaimable_links(self, pool: str, *, cutoff: datetime, now: datetime) -> int:
        statement = (
            sa.update(links)
            .where(self._unclaimable(pool, cutoff))
            .values(status=LinkStatus.VOID, voided_at=now)
        )
        with self.write() as connection:
            return int(connection.execute(statement).rowcount)

    @staticmethod
    def _unclaimable(pool: str, cutoff: datetime) -> sa.ColumnElement[bool]:
        return sa.and_(
            links.c.pool == pool,
            links.c.status == LinkStatus.AVAILABLE,
            links.c.expires_at < cutoff,
        )


class _Refused(Exception):
    """Rolls back ``begin_reaping``'s transaction."""


__all__: list[str] = []  # internal: see linkpool.store.Store
