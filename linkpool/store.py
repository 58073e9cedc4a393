"""Every query linkpool runs, in one place.

``Store`` wraps an engine. Callers pass times in; the store never reads a clock, so every
decision about "now" is made (and injectable) one level up.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, RowMapping

from linkpool.db import database_error, read_transaction, translate_errors, write_transaction
from linkpool.models import LinkStatus, ListState, UTCDateTime, WriteBack, leases, links, lists

CLAIM_COLUMNS = (
    links.c.id,
    links.c.pool,
    links.c.url,
    links.c.expires_at,
    links.c.contact_id,
    links.c.contact_lookup_id,
    links.c.recipient,
    links.c.idempotency_key,
    links.c.data,
    links.c.claimed_at,
)


@dataclass(frozen=True)
class ClaimRequest:
    pool: str
    recipient: str
    key: str | None
    data: str | None  # canonical JSON text
    now: datetime
    cutoff: datetime  # links must expire at or after this to be handed out


@dataclass(frozen=True)
class PoolCounts:
    available: int
    claimable: int
    claimed: int
    claimed_24h: int
    expired: int
    void: int
    writeback_pending: int
    writeback_failed: int
    lists: tuple[str, ...]

    @property
    def too_old(self) -> int:
        """Available links with less than ``min_remaining`` left: kept, never handed out."""
        return self.available - self.claimable


class Store:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._postgres = engine.dialect.name == "postgresql"

    def write(self) -> Any:
        """A write transaction (``BEGIN IMMEDIATE`` on SQLite)."""
        return write_transaction(self.engine)

    def read(self) -> Any:
        return read_transaction(self.engine)

    # --- the claim ---------------------------------------------------------------------------

    def claim(self, request: ClaimRequest) -> dict[str, Any] | None:
        """Claim one link; None if the pool has none claimable.

        Raises ``sa.exc.IntegrityError`` when ``request.key`` was already used: the caller then
        looks the earlier claim up with ``claim_by_key``.
        """
        return self._compiled_claim.run(
            {
                "p_pool": request.pool,
                "p_cutoff": request.cutoff,
                "p_recipient": request.recipient,
                "p_key": request.key,
                "p_data": request.data,
                "p_now": request.now,
            }
        )

    @cached_property
    def _compiled_claim(self) -> CompiledClaim:
        return CompiledClaim(self.engine, self._claim_statement)

    @cached_property
    def _claim_statement(self) -> sa.Update:
        """The one statement that claims: pick the soonest-expiring claimable link, mark it.

        PostgreSQL skips rows other claimers hold locked; SQLite needs no lock hint, since
        ``BEGIN IMMEDIATE`` serialises writers.
        """
        now = sa.bindparam("p_now", type_=UTCDateTime)
        candidate = (
            sa.select(links.c.id)
            .where(
                links.c.pool == sa.bindparam("p_pool"),
                # Literals, not parameters: a prepared (generic) plan can only use the partial
                # index and stop after one row when the planner sees these values.
                links.c.status == sa.literal_column(f"'{LinkStatus.AVAILABLE}'"),
                links.c.expires_at >= sa.bindparam("p_cutoff", type_=UTCDateTime),
            )
            .order_by(links.c.expires_at)
            .limit(sa.literal_column("1"))
        )
        if self._postgres:
            candidate = candidate.with_for_update(skip_locked=True)
        return (
            sa.update(links)
            .where(links.c.id == candidate.scalar_subquery())
            .values(
                status=LinkStatus.CLAIMED,
                recipient=sa.bindparam("p_recipient"),
                idempotency_key=sa.bindparam("p_key"),
                data=sa.bindparam("p_data"),
                claimed_at=now,
                writeback=WriteBack.PENDING,
                writeback_due_at=now,
            )
            .returning(*CLAIM_COLUMNS)
        )

    def claim_by_key(self, pool: str, key: str) -> RowMapping | None:
        query = sa.select(*CLAIM_COLUMNS).where(
            links.c.pool == pool, links.c.idempotency_key == key
        )
        with self.read() as connection:
            return connection.execute(query).mappings().first()

    # --- counts ------------------------------------------------------------------------------

    def counts(self, pool: str, now: datetime, min_remaining: timedelta) -> PoolCounts:
        status, expires = links.c.status, links.c.expires_at
        available = sa.and_(status == LinkStatus.AVAILABLE, expires > now)

        def count_if(condition: Any) -> Any:
            return sa.func.coalesce(sa.func.sum(sa.case((condition, 1), else_=0)), 0)

        query = sa.select(
            count_if(available),
            count_if(sa.and_(status == LinkStatus.AVAILABLE, expires >= now + min_remaining)),
            count_if(status == LinkStatus.CLAIMED),
            count_if(
                sa.and_(status == LinkStatus.CLAIMED, links.c.claimed_at >= now - timedelta(days=1))
            ),
            count_if(sa.and_(status == LinkStatus.AVAILABLE, expires <= now)),
            count_if(status == LinkStatus.VOID),
            count_if(links.c.writeback == WriteBack.PENDING),
            count_if(links.c.writeback == WriteBack.FAILED),
        ).where(links.c.pool == pool)
        with self.read() as connection:
            row = connection.execute(query).one()
            live = self._live_list_ids(connection, pool)
        names = [name for name in PoolCounts.__dataclass_fields__ if name != "lists"]
        return PoolCounts(**{name: int(n) for name, n in zip(names, row, strict=True)}, lists=live)

    def _live_list_ids(self, connection: Connection, pool: str) -> tuple[str, ...]:
        query = (
            sa.select(lists.c.mailing_list_id)
            .where(
                lists.c.pool == pool,
                lists.c.state != ListState.DELETED,
                lists.c.mailing_list_id.is_not(None),
            )
            .order_by(lists.c.id)
        )
        return tuple(connection.execute(query).scalars())

    # --- lists and links (provisioning writes them; tests seed through them) ----------------

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
            return int(connection.execute(sa.insert(lists).values(values)).inserted_primary_key[0])

    def update_list(self, list_id: int, *, now: datetime, **values: Any) -> None:
        with self.write() as connection:
            connection.execute(
                sa.update(lists).where(lists.c.id == list_id).values(updated_at=now, **values)
            )

    def get_list(self, list_id: int) -> RowMapping:
        with self.read() as connection:
            return (
                connection.execute(sa.select(lists).where(lists.c.id == list_id)).mappings().one()
            )

    def lists_in_states(self, states: Iterable[str], pool: str | None = None) -> list[RowMapping]:
        query = sa.select(lists).where(lists.c.state.in_(list(states))).order_by(lists.c.id)
        if pool is not None:
            query = query.where(lists.c.pool == pool)
        with self.read() as connection:
            return list(connection.execute(query).mappings())

    def insert_links(self, list_id: int, pool: str, rows: Sequence[Mapping[str, Any]]) -> int:
        """Store available links of a list: rows carry ext_ref, contact_id, contact_lookup_id,
        url and expires_at. Returns how many were inserted."""
        if not rows:
            return 0
        values = [
            dict(row, list_id=list_id, pool=pool, status=LinkStatus.AVAILABLE) for row in rows
        ]
        with self.write() as connection:
            connection.execute(sa.insert(links), values)
        return len(values)

    # --- claims for export -------------------------------------------------------------------

    def iter_claims(self, pool: str) -> Iterator[RowMapping]:
        """Every claim of a pool, oldest first, with the ids of its list and distribution."""
        query = (
            sa.select(
                links.c.id.label("link_id"),
                links.c.recipient,
                links.c.idempotency_key,
                links.c.data,
                links.c.claimed_at,
                links.c.url,
                links.c.expires_at,
                links.c.contact_id,
                links.c.contact_lookup_id,
                links.c.ext_ref,
                links.c.writeback,
                lists.c.mailing_list_id,
                lists.c.distribution_id,
                lists.c.survey_id,
            )
            .join(lists, lists.c.id == links.c.list_id)
            .where(links.c.pool == pool, links.c.status == LinkStatus.CLAIMED)
            .order_by(links.c.claimed_at, links.c.id)
        )
        with self.read() as connection:
            yield from connection.execute(query).mappings()

    # --- leases ------------------------------------------------------------------------------

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
        except sa.exc.IntegrityError:
            return False
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
        with self.write() as connection:
            return connection.execute(statement).rowcount == 1

    def release_lease(self, name: str, holder: str) -> None:
        with self.write() as connection:
            connection.execute(
                sa.delete(leases).where(leases.c.name == name, leases.c.holder == holder)
            )

    def lease_holder(self, name: str, *, now: datetime) -> str | None:
        query = sa.select(leases.c.holder).where(leases.c.name == name, leases.c.expires_at >= now)
        with self.read() as connection:
            return connection.execute(query).scalar()

    # --- reaping (gc) ------------------------------------------------------------------------

    @staticmethod
    def _holds_live_claim(now: datetime) -> Any:
        """True for a list holding a claimed link that has not expired: gc never touches one."""
        return sa.exists().where(
            links.c.list_id == lists.c.id,
            links.c.status == LinkStatus.CLAIMED,
            links.c.expires_at > now,
        )

    def lists_being_reaped(self, *, now: datetime) -> list[RowMapping]:
        """Lists a gc began deleting (perhaps a gc that was killed): they are finished first."""
        reaping = (ListState.REAPING, ListState.DISTRIBUTION_DELETED)
        return self._lists_where(lists.c.state.in_(reaping), ~self._holds_live_claim(now))

    def expired_lists(self, *, now: datetime, expired_before: datetime) -> list[RowMapping]:
        """Live lists whose links expired before ``expired_before`` and hold no unexpired claim."""
        return self._lists_where(
            lists.c.state.in_(ListState.LIVE),
            lists.c.expires_at <= expired_before,
            ~self._holds_live_claim(now),
        )

    def abandoned_lists(self, *, now: datetime, stale_before: datetime) -> list[RowMapping]:
        """Lists provisioning left behind: failed ones, and ones stuck in a provisioning state
        since before ``stale_before``; never one that holds an unexpired claim."""
        stuck = sa.and_(
            lists.c.state.in_(ListState.PROVISIONING), lists.c.updated_at < stale_before
        )
        return self._lists_where(
            sa.or_(lists.c.state == ListState.FAILED, stuck), ~self._holds_live_claim(now)
        )

    def _lists_where(self, *conditions: Any) -> list[RowMapping]:
        query = sa.select(lists).where(*conditions).order_by(lists.c.expires_at, lists.c.id)
        with self.read() as connection:
            return list(connection.execute(query).mappings())

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
    def _unclaimable(pool: str, cutoff: datetime) -> Any:
        return sa.and_(
            links.c.pool == pool,
            links.c.status == LinkStatus.AVAILABLE,
            links.c.expires_at < cutoff,
        )

    def placeholder_contact_ids(self, list_id: int) -> list[str]:
        query = sa.select(links.c.contact_id).where(links.c.list_id == list_id).order_by(links.c.id)
        with self.read() as connection:
            return list(connection.execute(query).scalars())

    def known_mailing_lists(self) -> tuple[set[str], set[str]]:
        """(ids, names) of the lists the database still considers to exist on Qualtrics."""
        query = sa.select(lists.c.mailing_list_id, lists.c.name).where(
            lists.c.state != ListState.DELETED
        )
        with self.read() as connection:
            rows = connection.execute(query).all()
        return {row[0] for row in rows if row[0]}, {row[1] for row in rows}

    # --- write-back (sync) -------------------------------------------------------------------

    def due_writebacks(self, *, now: datetime, limit: int) -> list[RowMapping]:
        """Pending write-backs whose time has come, soonest due first, with their list."""
        query = (
            self._writeback_query()
            .where(links.c.writeback == WriteBack.PENDING, links.c.writeback_due_at <= now)
            .order_by(links.c.writeback_due_at, links.c.id)
            .limit(limit)
        )
        with self.read() as connection:
            return list(connection.execute(query).mappings())

    def writeback_of(self, link_id: int) -> RowMapping | None:
        query = self._writeback_query().where(links.c.id == link_id)
        with self.read() as connection:
            return connection.execute(query).mappings().first()

    @staticmethod
    def _writeback_query() -> sa.Select[Any]:
        return sa.select(
            links.c.id,
            links.c.pool,
            links.c.contact_id,
            links.c.recipient,
            links.c.data,
            links.c.writeback,
            links.c.writeback_attempts,
            lists.c.mailing_list_id,
            lists.c.state.label("list_state"),
        ).join(lists, lists.c.id == links.c.list_id)

    def record_writebacks(self, outcomes: Sequence[Mapping[str, Any]]) -> None:
        """Store many write-back outcomes in one transaction. Each carries ``link_id``,
        ``state``, ``attempts``, ``due_at`` and ``error``; only pending rows change."""
        if not outcomes:
            return
        statement = (
            sa.update(links)
            .where(
                links.c.id == sa.bindparam("b_link_id"),
                links.c.writeback == WriteBack.PENDING,
            )
            .values(
                writeback=sa.bindparam("b_state"),
                writeback_attempts=sa.bindparam("b_attempts"),
                writeback_due_at=sa.bindparam("b_due_at", type_=links.c.writeback_due_at.type),
                writeback_error=sa.bindparam("b_error"),
            )
        )
        rows = [{f"b_{key}": value for key, value in outcome.items()} for outcome in outcomes]
        with self.write() as connection:
            connection.execute(statement, rows)

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

    # --- provisioning (refill) ---------------------------------------------------------------

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
        rows: Sequence[Mapping[str, Any]],
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
                    links_stored=len(rows),
                    shortfall=shortfall,
                    last_error=None,
                    updated_at=now,
                )
            )
            if moved.rowcount != 1:
                return False
            if rows:
                values = [
                    dict(row, list_id=list_id, pool=pool, status=LinkStatus.AVAILABLE)
                    for row in rows
                ]
                connection.execute(sa.insert(links), values)
        return True


class _Refused(Exception):
    """Rolls back ``begin_reaping``'s transaction."""


class CompiledClaim:
    """The claim statement, compiled once, run on a pooled connection through the bare driver.

    The claim is the hot path: SQLAlchemy's per-execution machinery would double its cost and,
    on SQLite, the time the write lock is held. The SQL still comes from the Core statement
    above, and values still go through the column types' own bind and result processors.
    """

    def __init__(self, engine: Engine, statement: sa.Update) -> None:
        self.engine = engine
        dialect = engine.dialect
        compiled = statement.compile(dialect=dialect)
        self.sql = compiled.string
        self.positions = compiled.positiontup if dialect.positional else None
        # The statement's literals ('claimed', LIMIT 1…) are bound parameters too.
        self.constants = compiled.construct_params(_check=False)
        self.begin = "BEGIN IMMEDIATE" if dialect.name == "sqlite" else None
        datetime_type = UTCDateTime().dialect_impl(dialect)
        datetime_bind = datetime_type.bind_processor(dialect)
        datetime_result = datetime_type.result_processor(dialect, None)
        self.bind = {"p_now": datetime_bind, "p_cutoff": datetime_bind}
        self.result = {"expires_at": datetime_result, "claimed_at": datetime_result}
        self.columns = [column.name for column in CLAIM_COLUMNS]
        self.integrity_error = dialect.loaded_dbapi.IntegrityError
        self.driver_error = dialect.loaded_dbapi.Error

    def run(self, params: dict[str, Any]) -> dict[str, Any] | None:
        params = {**self.constants, **params}
        for name, process in self.bind.items():
            if process is not None:
                params[name] = process(params[name])
        values = [params[name] for name in self.positions] if self.positions else params
        with translate_errors():
            connection = self.engine.raw_connection()
        try:
            row = self._execute(connection, values)
        finally:
            connection.close()
        if row is None:
            return None
        record = dict(zip(self.columns, row, strict=True))
        for name, process in self.result.items():
            if process is not None:
                record[name] = process(record[name])
        return record

    def _execute(self, connection: Any, values: Any) -> Any:
        cursor = connection.cursor()
        try:
            if self.begin:
                cursor.execute(self.begin)
            cursor.execute(self.sql, values)
            row = cursor.fetchone()
            connection.commit()
            return row
        except self.driver_error as exc:
            if _is_disconnect(self.engine, exc, connection.driver_connection):
                # As SQLAlchemy does on a disconnect: every pooled connection predates it, so
                # all are replaced, not only this one (else each fails one claim in turn).
                self.engine.pool._invalidate(connection, exc)
            else:
                connection.rollback()
            if isinstance(exc, self.integrity_error):
                raise sa.exc.IntegrityError(self.sql, None, exc) from exc
            raise database_error(sa.exc.DBAPIError(self.sql, None, exc)) from exc
        finally:
            cursor.close()


def _is_disconnect(engine: Engine, exc: Any, driver_connection: Any) -> bool:
    """Whether ``exc`` left the connection unusable. The driver connection is what tells:
    a server shutting down (``AdminShutdown``) carries no message the dialect recognises."""
    return bool(engine.dialect.is_disconnect(exc, driver_connection, None))


def ping(engine: Engine) -> None:
    """Raise DatabaseError unless the database answers."""
    with translate_errors(), engine.connect() as connection:
        connection.execute(sa.text("SELECT 1"))


__all__ = ["ClaimRequest", "PoolCounts", "Store", "ping"]
