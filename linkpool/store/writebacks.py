"""Queries on write-backs: claims whose recipient and data go onto their contact (sync)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from linkpool.models import WriteBack, links, lists
from linkpool.store.base import StoreBase
from linkpool.store.records import ErasureOutcome, WriteBackOutcome, WriteBackRecord


class WriteBackQueries(StoreBase):
    def due_writebacks(self, *, now: datetime, limit: int) -> list[WriteBackRecord]:
        """Pending write-backs whose time has come, soonest due first, with their list."""
        query = (
            self._writeback_query()
            .where(links.c.writeback == WriteBack.PENDING, links.c.writeback_due_at <= now)
            .order_by(links.c.writeback_due_at, links.c.id)
            .limit(limit)
        )
        with self.read() as connection:
            return [WriteBackRecord.from_row(row) for row in connection.execute(query).mappings()]

    def writeback_of(self, link_id: int) -> WriteBackRecord | None:
        query = self._writeback_query().where(links.c.id == link_id)
        with self.read() as connection:
            row = connection.execute(query).mappings().first()
        return WriteBackRecord.from_row(row) if row is not None else None

    @staticmethod
    def _writeback_query() -> sa.Select[Any]:
        return sa.select(
            links.c.id,
            links.c.pool,
            links.c.contact_id,
            links.c.ext_ref,
            links.c.recipient,
            links.c.data,
            links.c.writeback,
            links.c.writeback_attempts,
            lists.c.mailing_list_id,
            lists.c.state.label("list_state"),
        ).join(lists, lists.c.id == links.c.list_id)

    def set_contact_ids(self, contact_ids: dict[int, str]) -> None:
        """Record the directory contact (``CID_``) found for links stored with a list entry
        (``CGC_``) as their ``contact_id``: link id → contact id."""
        if not contact_ids:
            return
        statement = (
            sa.update(links)
            .where(links.c.id == sa.bindparam("b_link_id"))
            .values(contact_id=sa.bindparam("b_contact_id"))
        )
        rows = [{"b_link_id": key, "b_contact_id": value} for key, value in contact_ids.items()]
        with self.write() as connection:
            connection.execute(statement, rows)

    def record_writebacks(self, outcomes: Sequence[WriteBackOutcome]) -> None:
        """Store many write-back outcomes in one transaction; only pending rows change."""
        if not outcomes:
            return
        with self.write() as connection:
            record_attempts(connection, "writeback", WriteBack.PENDING, outcomes)

    def requeue_failed_writebacks(self, *, now: datetime) -> int:
        """Make every failed write-back pending again, with a fresh attempt budget."""
        statement = (
            sa.update(links)
            .where(links.c.writeback == WriteBack.FAILED)
            .values(
                writeback=WriteBack.PENDING,
                writeback_attempts=0,
                writeback_due_at=now,
                writeback_error=None,
            )
        )
        with self.write() as connection:
            return int(connection.execute(statement).rowcount)


def record_attempts(
    connection: Connection,
    prefix: str,
    pending: str,
    outcomes: Sequence[WriteBackOutcome | ErasureOutcome],
) -> None:
    """Store what attempts of one kind left (``writeback`` or ``erasure``: the columns
    ``<prefix>``, ``<prefix>_attempts``, ``_due_at``, ``_error``); only pending ones change."""
    column = links.c[prefix]
    statement = (
        sa.update(links)
        .where(links.c.id == sa.bindparam("b_link_id"), column == pending)
        .values(
            {
                prefix: sa.bindparam("b_state"),
                f"{prefix}_attempts": sa.bindparam("b_attempts"),
                f"{prefix}_due_at": sa.bindparam(
                    "b_due_at", type_=links.c[f"{prefix}_due_at"].type
                ),
                f"{prefix}_error": sa.bindparam("b_error"),
            }
        )
    )
    rows = [
        {
            "b_link_id": outcome.link_id,
            "b_state": outcome.state,
            "b_attempts": outcome.attempts,
            "b_due_at": outcome.due_at,
            "b_error": outcome.error,
        }
        for outcome in outcomes
    ]
    connection.execute(statement, rows)


__all__: list[str] = []  # internal: see linkpool.store.Store
