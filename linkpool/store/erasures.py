"""Queries for ``forget``: erase a recipient from every claim, and the contact clearings after.

The erasure is one write transaction: recipient, idempotency key and data are removed, the link
stays claimed (never handed out again), a pending write-back is cancelled, and a clearing of the
placeholder contact is queued where a write-back may have put the data there.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from linkpool.models import Erasure, LinkStatus, ListState, WriteBack, links, lists
from linkpool.store.base import StoreBase
from linkpool.store.records import ErasedClaim, ErasureOutcome, ErasureRecord
from linkpool.store.writebacks import record_attempts


class ErasureQueries(StoreBase):
    def erase_recipient(
        self, recipient: str, *, now: datetime, no_write_back_in_flight: bool
    ) -> list[ErasedClaim]:
        """Erase ``recipient`` from every claim of every pool, in one transaction.

        ``no_write_back_in_flight`` is true when the caller holds the sync lease: a write-back
        never attempted then has written nothing, and needs no clearing. Without it, a sync may
        be sending one right now, so every claim's contact is cleared to be sure.
        """
        with self.write() as connection:
            rows = self._claims_of(connection, recipient)
            erased = [_erasure_of(row, no_write_back_in_flight) for row in rows]
            if erased:
                connection.execute(
                    _ERASE,
                    [
                        _erase_values(row, claim, now)
                        for row, claim in zip(rows, erased, strict=True)
                    ],
                )
        return erased

    def _claims_of(self, connection: Connection, recipient: str) -> list[sa.RowMapping]:
        query = (
            sa.select(
                links.c.id,
                links.c.pool,
                links.c.data,
                links.c.writeback,
                links.c.writeback_attempts,
                lists.c.mailing_list_id,
                lists.c.state.label("list_state"),
            )
            .join(lists, lists.c.id == links.c.list_id)
            .where(links.c.status == LinkStatus.CLAIMED, links.c.recipient == recipient)
            .order_by(links.c.id)
        )
        if self._postgres:
            query = query.with_for_update(of=links)
        return list(connection.execute(query).mappings())

    def due_erasures(
        self, *, now: datetime, limit: int, link_ids: Sequence[int] | None = None
    ) -> list[ErasureRecord]:
        """Pending contact clearings whose time has come (of ``link_ids`` only, if given)."""
        query = (
            sa.select(
                links.c.id,
                links.c.pool,
                links.c.contact_id,
                links.c.ext_ref,
                links.c.erasure_fields,
                links.c.erasure_attempts,
                lists.c.mailing_list_id,
                lists.c.state.label("list_state"),
            )
            .join(lists, lists.c.id == links.c.list_id)
            .where(links.c.erasure == Erasure.PENDING, links.c.erasure_due_at <= now)
            .order_by(links.c.erasure_due_at, links.c.id)
            .limit(limit)
        )
        if link_ids is not None:
            query = query.where(links.c.id.in_(list(link_ids)))
        with self.read() as connection:
            return [ErasureRecord.from_row(row) for row in connection.execute(query).mappings()]

    def record_erasures(self, outcomes: Sequence[ErasureOutcome]) -> None:
        """Store clearing outcomes in one transaction; only pending clearings change."""
        if not outcomes:
            return
        with self.write() as connection:
            record_attempts(connection, "erasure", Erasure.PENDING, outcomes)


_ERASE = (
    sa.update(links)
    .where(links.c.id == sa.bindparam("b_link_id"))
    .values(
        recipient=None,
        idempotency_key=None,
        data=None,
        erased_at=sa.bindparam("b_now", type_=links.c.erased_at.type),
        writeback=sa.bindparam("b_writeback"),
        writeback_due_at=None,
        writeback_error=None,
        erasure=sa.bindparam("b_erasure"),
        erasure_fields=sa.bindparam("b_fields"),
        erasure_attempts=0,
        erasure_due_at=sa.bindparam("b_due_at", type_=links.c.erasure_due_at.type),
        erasure_error=None,
    )
)


def _erasure_of(row: sa.RowMapping, no_write_back_in_flight: bool) -> ErasedClaim:
    may_have_written = (
        row["writeback"] == WriteBack.DONE
        or row["writeback_attempts"] > 0  # a PUT whose answer was lost may have landed
        or not no_write_back_in_flight
    )
    erasure: Erasure | None = None
    if may_have_written:
        gone = row["list_state"] in ListState.GONE or row["mailing_list_id"] is None
        erasure = Erasure.UNREACHABLE if gone else Erasure.PENDING
    return ErasedClaim(link_id=row["id"], pool=row["pool"], erasure=erasure)


def _erase_values(row: sa.RowMapping, claim: ErasedClaim, now: datetime) -> dict[str, Any]:
    pending = claim.erasure == Erasure.PENDING
    keys = sorted(json.loads(row["data"])) if row["data"] else []
    done = row["writeback"] == WriteBack.DONE
    return {
        "b_link_id": claim.link_id,
        "b_now": now,
        "b_writeback": WriteBack.DONE if done else WriteBack.CANCELLED,
        "b_erasure": claim.erasure,
        "b_fields": json.dumps(keys) if pending else None,
        "b_due_at": now if pending else None,
    }


__all__: list[str] = []  # internal: see linkpool.store.Store
