"""Queries of ``linkpool archive``: claims of deleted lists, read out and then removed."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime

import sqlalchemy as sa

from linkpool.models import Erasure, LinkStatus, ListState, links, lists
from linkpool.store.base import StoreBase
from linkpool.store.claims import EXPORT_BATCH, EXPORT_COLUMNS
from linkpool.store.records import ArchivedClaim


class ArchiveQueries(StoreBase):
    def iter_archivable(self, *, before: datetime) -> Iterator[ArchivedClaim]:
        """Claims made before ``before`` whose list gc has deleted, by link id, streamed;
        not one whose ``forget`` still has to clear its contact (sync needs the row).

        Deleted lists' links never change status, so the set is stable while the archive is
        written; a list deleted meanwhile only adds claims, which the next run takes."""
        query = (
            sa.select(*EXPORT_COLUMNS, links.c.pool)
            .join(lists, lists.c.id == links.c.list_id)
            .where(
                lists.c.state == ListState.DELETED,
                links.c.status == LinkStatus.CLAIMED,
                links.c.claimed_at < before,
                links.c.erasure.is_distinct_from(Erasure.PENDING),
            )
            .order_by(links.c.id)
        )
        with self.read() as connection:
            rows = connection.execution_options(yield_per=EXPORT_BATCH).execute(query)
            for row in rows.mappings():
                yield ArchivedClaim.from_row(row)

    def delete_archived(self, batches: Iterable[Sequence[int]]) -> int:
        """Delete the claims with these link ids, in one transaction; only claims of deleted
        lists are ever removed, whatever the ids. Returns how many rows went."""
        deleted_lists = sa.select(lists.c.id).where(lists.c.state == ListState.DELETED)
        removed = 0
        with self.write() as connection:
            for batch in batches:
                statement = sa.delete(links).where(
                    links.c.id.in_(list(batch)),
                    links.c.status == LinkStatus.CLAIMED,
                    links.c.list_id.in_(deleted_lists),
                    links.c.erasure.is_distinct_from(Erasure.PENDING),
                )
                removed += int(connection.execute(statement).rowcount)
        return removed


__all__: list[str] = []  # internal: see linkpool.store.Store
