"""Queries on responses: the per-pool export cursor, the responses joined onto claims, the
responses on links nobody claimed, and the enrichment of recorded responses (bulk jobs)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from linkpool.models import (
    UNSETTLED_ENRICHMENT,
    Enrichment,
    LinkStatus,
    ListState,
    UpdateState,
    closed_list_totals,
    links,
    lists,
    response_cursors,
    response_updates,
    stray_responses,
)
from linkpool.store.base import StoreBase
from linkpool.store.records import Record
from linkpool.store.totals import (
    add_closed_totals,
    answered,
    closed_total,
    count_if,
    count_where,
    finished,
    live_lists,
)

_OPEN = (Enrichment.PENDING, Enrichment.SENDING, Enrichment.VERIFY)


@dataclass(frozen=True)
class CursorRecord(Record):
    """How far a pool's response tracking got, and the export it has in flight."""

    pool: str
    survey_id: str
    recorded_until: datetime | None
    export_progress_id: str | None
    export_start: datetime | None
    export_requested_at: datetime | None


@dataclass(frozen=True)
class AnsweredLink(Record):
    """A link that a response in an export names by its ``ext_ref``."""

    id: int
    pool: str
    ext_ref: str
    status: str
    recipient: str | None
    data: str | None
    response_id: str | None
    response_finished: bool | None
    responded_at: datetime | None
    enrichment: str | None
    erased_at: datetime | None


@dataclass(frozen=True)
class ResponseChange:
    """What a response changes on its claim (``Store.record_responses``)."""

    link_id: int
    response_id: str
    finished: bool
    responded_at: datetime | None
    enrichment: Enrichment | None


@dataclass(frozen=True)
class StrayResponse:
    response_id: str
    pool: str
    ext_ref: str
    link_status: str
    recorded_at: datetime | None


@dataclass(frozen=True)
class EnrichmentItem(Record):
    """An answered claim whose data is still to go onto its response."""

    id: int
    pool: str
    response_id: str
    recipient: str
    data: str | None


@dataclass(frozen=True)
class UpdateRecord(Record):
    id: int
    pool: str
    survey_id: str
    progress_id: str | None
    state: UpdateState

    def __post_init__(self) -> None:
        object.__setattr__(self, "state", UpdateState(self.state))


@dataclass(frozen=True)
class ResponseCounts:
    answered: int
    answered_24h: int
    finished: int
    unclaimed_responses: int
    enrichment_open: int
    enrichment_failed: int


class ResponseQueries(StoreBase):
    # --- the cursor ---------------------------------------------------------------------

    def response_cursor(self, pool: str) -> CursorRecord | None:
        query = sa.select(*_cursor_columns()).where(response_cursors.c.pool == pool)
        with self.read() as connection:
            row = connection.execute(query).mappings().first()
        return CursorRecord.from_row(row) if row is not None else None

    def first_list_created(self, pool: str) -> datetime | None:
        """When the pool's first list was made: no response of it can be older."""
        query = (
            sa.select(lists.c.created_at)
            .where(lists.c.pool == pool)
            .order_by(lists.c.created_at)
            .limit(1)
        )
        with self.read() as connection:
            value: datetime | None = connection.execute(query).scalar()
        return value

    def ensure_cursor(self, pool: str, survey_id: str, *, now: datetime) -> CursorRecord:
        with self.write() as connection:
            found = connection.execute(
                sa.select(response_cursors.c.pool).where(response_cursors.c.pool == pool)
            ).first()
            if found is None:
                connection.execute(
                    sa.insert(response_cursors).values(
                        pool=pool, survey_id=survey_id, updated_at=now
                    )
                )
        cursor = self.response_cursor(pool)
        assert cursor is not None
        return cursor

    def record_export_started(
        self, pool: str, *, progress_id: str, start: datetime, requested_at: datetime
    ) -> None:
        self._update_cursor(
            pool,
            requested_at,
            export_progress_id=progress_id,
            export_start=start,
            export_requested_at=requested_at,
        )

    def finish_export(self, pool: str, *, recorded_until: datetime | None, now: datetime) -> None:
        """The export in flight was read (``recorded_until`` set) or given up (None)."""
        values: dict[str, Any] = {
            "export_progress_id": None,
            "export_start": None,
            "export_requested_at": None,
        }
        if recorded_until is not None:
            values["recorded_until"] = recorded_until
        self._update_cursor(pool, now, **values)

    def _update_cursor(self, pool: str, now: datetime, **values: Any) -> None:
        statement = (
            sa.update(response_cursors)
            .where(response_cursors.c.pool == pool)
            .values(updated_at=now, **values)
        )
        with self.write() as connection:
            connection.execute(statement)

    # --- the join -----------------------------------------------------------------------

    def links_by_ext_ref(self, ext_refs: Iterable[str]) -> list[AnsweredLink]:
        wanted = list(set(ext_refs))
        if not wanted:
            return []
        query = sa.select(
            links.c.id,
            links.c.pool,
            links.c.ext_ref,
            links.c.status,
            links.c.recipient,
            links.c.data,
            links.c.response_id,
            links.c.response_finished,
            links.c.responded_at,
            links.c.enrichment,
            links.c.erased_at,
        ).where(links.c.ext_ref.in_(wanted))
        with self.read() as connection:
            return [AnsweredLink.from_row(row) for row in connection.execute(query).mappings()]

    def record_responses(self, changes: Sequence[ResponseChange]) -> None:
        """Store what responses changed on claims, in one transaction; claimed links only.

        A response can arrive after gc deleted its claim's list (a late export): that list's
        answered and finished claims were already added to ``closed_list_totals``, so what
        the change adds to them (or takes away, a response turned unfinished) is added there
        too, in the same transaction."""
        if not changes:
            return
        statement = (
            sa.update(links)
            .where(links.c.id == sa.bindparam("b_id"), links.c.status == LinkStatus.CLAIMED)
            .values(
                response_id=sa.bindparam("b_response_id"),
                response_finished=sa.bindparam("b_finished"),
                responded_at=sa.bindparam("b_at", type_=links.c.responded_at.type),
                enrichment=sa.bindparam("b_enrichment"),
            )
        )
        rows = [
            {
                "b_id": change.link_id,
                "b_response_id": change.response_id,
                "b_finished": change.finished,
                "b_at": change.responded_at,
                "b_enrichment": change.enrichment,
            }
            for change in changes
        ]
        link_ids = [change.link_id for change in changes]
        with self.write() as connection:
            deleted = _lock_deleted_lists(connection, link_ids)
            before = _answers_of_deleted_lists(connection, link_ids, deleted)
            connection.execute(statement, rows)
            after = _answers_of_deleted_lists(connection, link_ids, deleted)
            for pool, figures in after.items():  # the same links, locked: the same pools
                added = {name: value - before[pool][name] for name, value in figures.items()}
                if any(added.values()):
                    add_closed_totals(connection, pool, added)

    def record_strays(self, strays: Sequence[StrayResponse], *, now: datetime) -> int:
        """Remember responses on unclaimed links, each once; returns how many were new."""
        if not strays:
            return 0
        ids = [stray.response_id for stray in strays]
        with self.write() as connection:
            known = set(
                connection.execute(
                    sa.select(stray_responses.c.response_id).where(
                        stray_responses.c.response_id.in_(ids)
                    )
                ).scalars()
            )
            new = {s.response_id: s for s in strays if s.response_id not in known}
            if new:
                connection.execute(
                    sa.insert(stray_responses),
                    [
                        {
                            "response_id": s.response_id,
                            "pool": s.pool,
                            "ext_ref": s.ext_ref,
                            "link_status": s.link_status,
                            "recorded_at": s.recorded_at,
                            "seen_at": now,
                        }
                        for s in new.values()
                    ],
                )
        return len(new)

    # --- enrichment ---------------------------------------------------------------------

    def pending_enrichments(self, pool: str, *, limit: int) -> list[EnrichmentItem]:
        query = (
            sa.select(
                links.c.id, links.c.pool, links.c.response_id, links.c.recipient, links.c.data
            )
            .where(links.c.pool == pool, links.c.enrichment == Enrichment.PENDING)
            .order_by(links.c.id)
            .limit(limit)
        )
        with self.read() as connection:
            return [EnrichmentItem.from_row(row) for row in connection.execute(query).mappings()]

    def start_update(
        self, pool: str, survey_id: str, link_ids: Sequence[int], *, now: datetime
    ) -> int:
        """Record a bulk update job before its POST, with the claims it carries."""
        with self.write() as connection:
            update_id = connection.execute(
                sa.insert(response_updates)
                .values(
                    pool=pool,
                    survey_id=survey_id,
                    state=UpdateState.SENDING,
                    items=len(link_ids),
                    created_at=now,
                    updated_at=now,
                )
                .returning(response_updates.c.id)
            ).scalar_one()
            connection.execute(
                sa.update(links)
                .where(links.c.id.in_(link_ids), links.c.enrichment == Enrichment.PENDING)
                .values(enrichment=Enrichment.SENDING, enrichment_update_id=update_id)
            )
        return int(update_id)

    def update_running(self, update_id: int, progress_id: str, *, now: datetime) -> None:
        statement = (
            sa.update(response_updates)
            .where(response_updates.c.id == update_id)
            .values(progress_id=progress_id, state=UpdateState.RUNNING, updated_at=now)
        )
        with self.write() as connection:
            connection.execute(statement)

    def finish_update(
        self, update_id: int, state: UpdateState, *, now: datetime, error: str | None = None
    ) -> int:
        """End a job; its claims become done (complete), pending again (failed: sent again,
        one by one) or to verify (unknown). Returns how many claims it carried."""
        claims_become = {
            UpdateState.COMPLETE: Enrichment.DONE,
            UpdateState.FAILED: Enrichment.PENDING,
            UpdateState.UNKNOWN: Enrichment.VERIFY,
        }[state]
        with self.write() as connection:
            connection.execute(
                sa.update(response_updates)
                .where(response_updates.c.id == update_id)
                .values(state=state, updated_at=now, error=error)
            )
            changed = connection.execute(
                sa.update(links)
                .where(
                    links.c.enrichment_update_id == update_id,
                    links.c.enrichment == Enrichment.SENDING,
                )
                .values(enrichment=claims_become, enrichment_error=error)
            ).rowcount
        return int(changed)

    def set_enrichment(
        self, link_ids: Sequence[int], state: Enrichment, *, error: str | None = None
    ) -> None:
        if not link_ids:
            return
        statement = (
            sa.update(links)
            .where(links.c.id.in_(link_ids))
            .values(enrichment=state, enrichment_error=error)
        )
        with self.write() as connection:
            connection.execute(statement)

    def unfinished_updates(self, pool: str) -> list[UpdateRecord]:
        query = (
            sa.select(
                response_updates.c.id,
                response_updates.c.pool,
                response_updates.c.survey_id,
                response_updates.c.progress_id,
                response_updates.c.state,
            )
            .where(
                response_updates.c.pool == pool,
                response_updates.c.state.in_((UpdateState.SENDING, UpdateState.RUNNING)),
            )
            .order_by(response_updates.c.id)
        )
        with self.read() as connection:
            return [UpdateRecord.from_row(row) for row in connection.execute(query).mappings()]

    def verify_floor(self, pool: str) -> datetime | None:
        """The oldest recorded time among claims whose enrichment is to be verified."""
        query = (
            sa.select(links.c.responded_at)
            .where(links.c.pool == pool, links.c.enrichment == Enrichment.VERIFY)
            .order_by(links.c.responded_at)
            .limit(1)
        )
        with self.read() as connection:
            value: datetime | None = connection.execute(query).scalar()
        return value

    # --- what status shows --------------------------------------------------------------

    def response_counts(self, pool: str, now: datetime) -> ResponseCounts:
        """The pool's response figures, none read from the history: ``answered`` and
        ``finished`` as the answered claims of the lists not yet deleted
        (``ix_links_answered_list_id``) plus the deleted lists' totals in
        ``closed_list_totals``, in one statement (one snapshot); the enrichment still to do
        through ``ix_links_enrichment_unsettled``; ``answered_24h`` as a range of
        ``ix_links_answered``.

        The day's range is a statement of its own: how many rows it reads depends on the
        cutoff, so PostgreSQL plans it anew on every call (alone, that is cheap), whereas the
        rest keeps one prepared plan. Together in one statement, every call would plan all of
        it again once the history is large (a millisecond at a million claims)."""
        with self.read() as connection:
            row = connection.execute(response_counts_query(pool)).mappings().one()
            day = connection.execute(answered_since_query(pool, now - timedelta(days=1)))
            answered_24h = int(day.scalar_one())
        return ResponseCounts(
            answered=int(row["live_answered"]) + int(row["closed_answered"]),
            answered_24h=answered_24h,
            finished=int(row["live_finished"]) + int(row["closed_finished"]),
            unclaimed_responses=int(row["unclaimed_responses"]),
            enrichment_open=int(row["enrichment_open"]),
            enrichment_failed=int(row["enrichment_failed"]),
        )


def response_counts_query(pool: str) -> sa.Select[Any]:
    live = links.c.list_id.in_(live_lists(pool))
    unsettled = sa.text(UNSETTLED_ENRICHMENT)
    strays = sa.select(sa.func.count()).where(stray_responses.c.pool == pool).scalar_subquery()
    return sa.select(
        count_where(live, answered()).label("live_answered"),
        count_where(live, answered(), finished()).label("live_finished"),
        closed_total(pool, closed_list_totals.c.answered).label("closed_answered"),
        closed_total(pool, closed_list_totals.c.finished).label("closed_finished"),
        count_where(links.c.pool == pool, unsettled, links.c.enrichment.in_(_OPEN)).label(
            "enrichment_open"
        ),
        count_where(links.c.pool == pool, unsettled, links.c.enrichment == Enrichment.FAILED).label(
            "enrichment_failed"
        ),
        strays.label("unclaimed_responses"),
    )


def answered_since_query(pool: str, since: datetime) -> sa.Select[Any]:
    return sa.select(sa.func.count()).where(
        links.c.pool == pool, answered(), links.c.responded_at >= since
    )


PoolFigures = dict[str, dict[str, int]]
"""Figures by pool, then by ``closed_list_totals`` column."""


def _lock_deleted_lists(connection: Connection, link_ids: Sequence[int]) -> list[int]:
    """The deleted lists among those of these links, having locked the links and their lists
    until the transaction ends (PostgreSQL; SQLite's write transaction excludes every other
    writer). The lists ``FOR SHARE``: gc's update that marks one deleted waits for this
    transaction, and then counts its answers (``close_list`` reads them after its update), so
    a response recorded on a list still live is counted by gc when it deletes the list, and one
    on a list gc deleted first is added here. (``FOR KEY SHARE`` would not do: gc's update
    changes no key, so it does not conflict.) The links ``FOR KEY SHARE``: archive cannot
    delete one between the two counts of ``record_responses``, while sync's updates of their
    write-back columns are not held up."""
    list_ids = connection.execute(
        sa.select(links.c.list_id)
        .where(links.c.id.in_(link_ids))
        .order_by(links.c.id)
        .with_for_update(key_share=True)
    ).scalars()
    states = connection.execute(
        sa.select(lists.c.id, lists.c.state)
        .where(lists.c.id.in_(sorted(set(list_ids))))
        .order_by(lists.c.id)
        .with_for_update(read=True)
    )
    return sorted(row.id for row in states if row.state == ListState.DELETED)


def _answers_of_deleted_lists(
    connection: Connection, link_ids: Sequence[int], list_ids: Sequence[int]
) -> PoolFigures:
    """The answered and finished claims among these links of these (deleted) lists."""
    if not list_ids:
        return {}
    query = (
        sa.select(
            links.c.pool,
            count_if(answered(), "answered"),
            count_if(sa.and_(answered(), finished()), "finished"),
        )
        .where(links.c.id.in_(link_ids), links.c.list_id.in_(list_ids))
        .group_by(links.c.pool)
    )
    rows = connection.execute(query).mappings()
    return {
        row["pool"]: {"answered": int(row["answered"]), "finished": int(row["finished"])}
        for row in rows
    }


def _cursor_columns() -> tuple[sa.Column[Any], ...]:
    c = response_cursors.c
    return (
        c.pool,
        c.survey_id,
        c.recorded_until,
        c.export_progress_id,
        c.export_start,
        c.export_requested_at,
    )


__all__ = [
    "AnsweredLink",
    "CursorRecord",
    "EnrichmentItem",
    "ResponseChange",
    "ResponseCounts",
    "StrayResponse",
    "UpdateRecord",
]
