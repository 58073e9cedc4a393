"""Queries on claims: the claim itself (the hot path), lookups by key, counts and the export."""

from __future__ import annotations

import codecs
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from linkpool.db import database_error, translate_errors
from linkpool.errors import DuplicateRecord
from linkpool.models import (
    LinkStatus,
    ListState,
    UTCDateTime,
    WriteBack,
    closed_list_totals,
    links,
    lists,
)
from linkpool.store.base import StoreBase
from linkpool.store.predicates import list_not_deleted, literal
from linkpool.store.records import ClaimRecord, ClaimRequest, ExportedClaim, PoolCounts
from linkpool.store.totals import NOT_DELETED, closed_total, count_if, count_where, live_lists

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


class ClaimQueries(StoreBase):
    def claim(self, request: ClaimRequest) -> ClaimRecord | None:
        """Claim one link; None if the pool has none claimable.

        Raises ``DuplicateRecord`` when ``request.key`` was already used: the caller then
        looks the earlier claim up with ``claim_by_key``.
        """
        return self.compiled_claim.run(claim_parameters(request))

    @cached_property
    def compiled_claim(self) -> CompiledClaim:
        """The claim statement as the bare driver runs it (``linkpool.store.async_claim`` runs
        the same one on asyncio)."""
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
                writeback=sa.bindparam("p_writeback"),  # per pool: None writes nothing back
                writeback_due_at=now,
            )
            .returning(*CLAIM_COLUMNS)
        )

    def claim_by_key(self, pool: str, key: str) -> ClaimRecord | None:
        query = sa.select(*CLAIM_COLUMNS).where(
            links.c.pool == pool, links.c.idempotency_key == key
        )
        with self.read() as connection:
            row = connection.execute(query).mappings().first()
        return ClaimRecord.from_row(row) if row is not None else None

    def claims_of_recipient(self, pool: str, recipient: str) -> list[ClaimRecord]:
        """Every claim of ``recipient`` in ``pool``, oldest first (an operator's lookup, not a
        hot path: it reads the pool's claims without an index on the recipient)."""
        query = (
            sa.select(*CLAIM_COLUMNS)
            .where(links.c.pool == pool, links.c.recipient == recipient)
            .order_by(links.c.claimed_at, links.c.id)
        )
        with self.read() as connection:
            return [ClaimRecord.from_row(row) for row in connection.execute(query).mappings()]

    def list_deleted_for_link(self, link_id: int) -> bool:
        """Whether the link's mailing list is deleted (or being deleted) on Qualtrics."""
        gone = (ListState.REAPING, ListState.DISTRIBUTION_DELETED, ListState.DELETED)
        query = (
            sa.select(lists.c.state)
            .select_from(links.join(lists, links.c.list_id == lists.c.id))
            .where(links.c.id == link_id)
        )
        with self.read() as connection:
            state = connection.execute(query).scalar()
        return state in gone

    def counts(self, pool: str, now: datetime, min_remaining: timedelta) -> PoolCounts:
        """The pool's stock and its claim totals, in one statement (one snapshot).

        Each figure is read from an index over what is live, never from the history: the
        available links through ``ix_links_claimable``; the last day's claims as a range of
        ``ix_links_pool_claimed_at``; the claimed and void links of lists not yet deleted
        through ``ix_links_list_id_status_expires_at``, plus the deleted lists' totals that gc
        summed once into ``closed_list_totals`` (so archived claims still count).
        """
        query = counts_query(pool, now, min_remaining, postgres=self._postgres)
        with self.read() as connection:
            row = connection.execute(query).mappings().one()
            live = self._live_list_ids(connection, pool)
        return PoolCounts(
            available=int(row["available"]),
            claimable=int(row["claimable"]),
            claimed=int(row["live_claimed"]) + int(row["closed_claimed"]),
            claimed_24h=int(row["claimed_24h"]),
            expired=int(row["expired"]),
            void=int(row["live_void"]) + int(row["closed_void"]),
            writeback_pending=int(row["writeback_pending"]),
            writeback_failed=int(row["writeback_failed"]),
            lists=live,
        )

    @staticmethod
    def _live_list_ids(connection: Connection, pool: str) -> tuple[str, ...]:
        query = (
            sa.select(lists.c.mailing_list_id)
            .where(
                lists.c.pool == pool,
                lists.c.state.in_(NOT_DELETED),
                list_not_deleted(),
                lists.c.mailing_list_id.is_not(None),
            )
            .order_by(lists.c.id)
        )
        return tuple(connection.execute(query).scalars())

    def iter_claims(
        self, pool: str, since: datetime | None = None, *, answered: bool | None = None
    ) -> Iterator[ExportedClaim]:
        """Every claim of a pool (made at or after ``since``, if given; with or without a
        response, if ``answered`` is True or False), oldest first, with the ids of its list
        and distribution. Streams: a server-side cursor on PostgreSQL, fetched
        ``EXPORT_BATCH`` rows at a time, so memory stays flat at any ledger size."""
        query = self._export_query(list(EXPORT_COLUMNS), pool, since, answered)
        with self.read() as connection:
            rows = connection.execution_options(yield_per=EXPORT_BATCH).execute(query)
            for row in rows.mappings():
                yield ExportedClaim.from_row(row)

    def export_rows(
        self, pool: str, since: datetime | None = None, *, answered: bool | None = None
    ) -> Iterator[list[tuple[str | None, ...]]]:
        """The rows of ``linkpool export`` in batches of ``EXPORT_BATCH``: every value text
        (or None), in ``EXPORT_TEXT_COLUMNS`` order, times already ISO 8601 in UTC."""
        columns = list(export_text_columns(self._postgres).values())
        query = self._export_query(columns, pool, since, answered)
        for batch in self._stream(query):
            yield [tuple(row) for row in batch]

    def copy_csv(
        self,
        pool: str,
        since: datetime | None,
        write: Callable[[str], object],
        *,
        answered: bool | None = None,
    ) -> int:
        """Write the export's rows through ``write`` as CSV lines (LF-terminated, no header):
        the database formats them, at the pace of its own bulk export. Returns the row count.

        PostgreSQL runs ``COPY (the export's query) TO STDOUT``; SQLite, which has no COPY,
        returns each row as one CSV line built in the query (``csv_line``), fetched through the
        bare driver. Formatting in Python cost four times the query at a million rows, and
        SQLAlchemy's rows a sixth more than the driver's (docs/benchmarks.md)."""
        columns = export_text_columns(self._postgres)
        if self._postgres:
            return self._copy_postgres(
                self._export_query(list(columns.values()), pool, since, answered), write
            )
        return self._copy_sqlite(
            self._export_query([csv_line(columns)], pool, since, answered), write
        )

    def _copy_sqlite(self, query: sa.Select[Any], write: Callable[[str], object]) -> int:
        statement, parameters = driver_statement(self.engine.dialect, query)
        driver_error = self.engine.dialect.loaded_dbapi.Error
        count = 0
        with self.read() as connection:
            cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
            try:
                cursor.execute(statement, parameters)
                while batch := cursor.fetchmany(EXPORT_BATCH):
                    write("\n".join([row[0] for row in batch]) + "\n")
                    count += len(batch)
                return count
            except driver_error as exc:
                raise database_error(sa.exc.DBAPIError(statement, None, exc)) from exc
            finally:
                cursor.close()

    def _copy_postgres(self, query: sa.Select[Any], write: Callable[[str], object]) -> int:
        compiled = query.compile(dialect=self.engine.dialect)
        statement = f"COPY ({compiled.string}) TO STDOUT (FORMAT csv)"
        decoder = codecs.getincrementaldecoder("utf-8")()  # a block may end mid-character
        driver_error = self.engine.dialect.loaded_dbapi.Error
        with self.read() as connection:
            connection.exec_driver_sql("SET LOCAL DateStyle = 'ISO'")
            cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
            try:
                with cursor.copy(statement, compiled.params) as copy:
                    for block in copy:
                        write(decoder.decode(bytes(block)))
                write(decoder.decode(b"", final=True))
                return int(cursor.rowcount)
            except driver_error as exc:
                raise database_error(sa.exc.DBAPIError(statement, None, exc)) from exc
            finally:
                cursor.close()

    @staticmethod
    def _export_query(
        columns: list[sa.ColumnElement[Any]],
        pool: str,
        since: datetime | None,
        answered: bool | None = None,
    ) -> sa.Select[Any]:
        query = (
            sa.select(*columns)
            .join(lists, lists.c.id == links.c.list_id)
            .where(links.c.pool == pool, links.c.status == LinkStatus.CLAIMED)
            .order_by(links.c.claimed_at, links.c.id)
        )
        if since is not None:
            query = query.where(links.c.claimed_at >= since)
        if answered is not None:
            has_response = links.c.response_id.is_not(None)
            query = query.where(has_response if answered else sa.not_(has_response))
        return query

    def _stream(self, query: sa.Select[Any]) -> Iterator[Sequence[sa.Row[Any]]]:
        """Batches of rows, fetched as they are consumed (a server-side cursor on PostgreSQL)."""
        with self.read() as connection:
            result = connection.execution_options(yield_per=EXPORT_BATCH).execute(query)
            yield from result.partitions()


EXPORT_BATCH = 2000
EXPORT_COLUMNS = (
    links.c.id.label("link_id"),
    links.c.recipient,
    links.c.idempotency_key,
    links.c.data,
    links.c.claimed_at,
    links.c.erased_at,
    links.c.url,
    links.c.expires_at,
    links.c.contact_id,
    links.c.contact_lookup_id,
    links.c.ext_ref,
    links.c.writeback,
    links.c.response_id,
    links.c.response_finished,
    links.c.responded_at,
    lists.c.mailing_list_id,
    lists.c.distribution_id,
    lists.c.survey_id,
)
EXPORT_TEXT_COLUMNS = (
    "claimed_at",
    "recipient",
    "key",
    "data",
    "url",
    "expires_at",
    "contact_id",
    "contact_lookup_id",
    "ext_ref",
    "mailing_list_id",
    "distribution_id",
    "survey_id",
    "writeback",
    "erased_at",
    "response_id",
    "finished",
    "responded_at",
)


def export_text_columns(postgres: bool) -> dict[str, sa.ColumnElement[Any]]:
    """The export's columns as text expressions, by name (``EXPORT_TEXT_COLUMNS``)."""
    iso = _postgres_iso if postgres else _sqlite_iso
    return {
        "claimed_at": iso(links.c.claimed_at),
        "recipient": links.c.recipient,
        "key": links.c.idempotency_key,
        "data": links.c.data,
        "url": links.c.url,
        "expires_at": iso(links.c.expires_at),
        "contact_id": links.c.contact_id,
        "contact_lookup_id": links.c.contact_lookup_id,
        "ext_ref": links.c.ext_ref,
        "mailing_list_id": lists.c.mailing_list_id,
        "distribution_id": lists.c.distribution_id,
        "survey_id": lists.c.survey_id,
        "writeback": links.c.writeback,
        "erased_at": iso(links.c.erased_at),
        "response_id": links.c.response_id,
        "finished": sa.case(
            (links.c.response_finished.is_(True), "true"),
            (links.c.response_finished.is_(False), "false"),
        ),
        "responded_at": iso(links.c.responded_at),
    }


def csv_line(columns: dict[str, sa.ColumnElement[Any]]) -> sa.ColumnElement[str]:
    """One CSV line of text columns in SQLite, quoted so that ``csv.reader`` reads back each
    value (as it reads PostgreSQL's COPY): NULL as nothing; a value holding a comma, a quote,
    CR or LF in quotes, its quotes doubled.

    One ``printf`` joins the fields (``%s`` of NULL is nothing): SQLite evaluates each function
    of the line once per row, and the line's cost is their count. So only the values that may
    hold those characters (recipient, key, URL) are checked: ``data`` is JSON, nearly always
    quoted, so it is quoted always (quoting is never wrong in CSV); the times, states and the
    ids linkpool makes or validates (``CSV_SAFE``) never need it."""
    fields = [
        _csv_field(name, sa.type_coerce(column, sa.String)) for name, column in columns.items()
    ]
    line = sa.func.printf(",".join(["%s"] * len(fields)), *fields)
    return sa.type_coerce(line, sa.String)


CSV_SAFE = frozenset(
    {
        "claimed_at",
        "expires_at",
        "contact_id",
        "contact_lookup_id",
        "ext_ref",
        "mailing_list_id",
        "distribution_id",
        "survey_id",
        "writeback",
        "erased_at",
        "response_id",
        "finished",
        "responded_at",
    }
)
"""Values whose characters never need quotes: the times (formatted by ``_sqlite_iso``), the
states, ``ext_ref`` (``slot_key``), ``survey_id`` (a config rule) and the ids Qualtrics answered,
which the client refuses unless they are letters, digits, ``_`` and ``-`` (``QUALTRICS_ID``)."""
CSV_QUOTED = frozenset({"data"})
QUOTE_WORTHY = (",", '"', "\n", "\r")
"""The characters that put a CSV value in quotes (as PostgreSQL's COPY and ``csv.writer``)."""


def _csv_field(name: str, value: sa.ColumnElement[str]) -> sa.ColumnElement[str]:
    if name in CSV_SAFE:
        return value
    quoted = '"' + sa.func.replace(value, '"', '""') + '"'
    if name in CSV_QUOTED:
        return quoted
    return sa.type_coerce(sa.case((_needs_quotes(value), quoted), else_=value), sa.String)


def _needs_quotes(value: sa.ColumnElement[str]) -> sa.ColumnElement[bool]:
    """One ``instr`` per character: SQLite runs each as a plain scan, where one GLOB of
    ``*[,"\r\n]*`` tries its class at every position, and cost the line a fifth more CPU."""
    return sa.or_(*(sa.func.instr(value, character) > 0 for character in QUOTE_WORTHY))


def _sqlite_iso(column: sa.Column[Any]) -> sa.ColumnElement[str]:
    """What ``datetime.isoformat()`` gives for the stored naive UTC text
    ``YYYY-MM-DD HH:MM:SS.ffffff``: a ``T``, no zero microseconds, ``+00:00``."""
    text = sa.func.replace(sa.func.replace(column, " ", "T"), ".000000", "")
    return sa.type_coerce(text, sa.String) + "+00:00"


def _postgres_iso(column: sa.Column[Any]) -> sa.ColumnElement[str]:
    """``datetime.isoformat()`` of the UTC time, from PostgreSQL's own ISO text (DateStyle
    ISO: ``YYYY-MM-DD HH:MM:SS[.f…]``, trailing zeros of the fraction dropped), padded back
    to six digits: a cast and three string functions, several times cheaper than to_char."""
    text = sa.cast(sa.func.timezone("UTC", column), sa.Text)
    padded = sa.case((sa.func.length(text) == 19, text), else_=sa.func.rpad(text, 26, "0"))
    return sa.type_coerce(sa.func.replace(padded, " ", "T"), sa.String) + "+00:00"


def counts_query(
    pool: str, now: datetime, min_remaining: timedelta, *, postgres: bool
) -> sa.Select[Any]:
    # SQLite would count the pending write-backs through the pool's claims by time (every claim
    # of the history); a unary + is its documented way to keep a term off an index, which
    # leaves it the partial index of pending write-backs.
    pending_pool = sa.literal_column("+links.pool") if not postgres else links.c.pool

    expires = links.c.expires_at
    stock = (
        sa.select(
            count_if(expires > now, "available"),
            count_if(expires >= now + min_remaining, "claimable"),
            count_if(expires <= now, "expired"),
        )
        .where(links.c.pool == pool, links.c.status == literal(LinkStatus.AVAILABLE))
        .subquery("stock")
    )
    live_ids = live_lists(pool)

    def live(status: str) -> sa.ScalarSelect[Any]:
        return count_where(links.c.list_id.in_(live_ids), links.c.status == literal(status))

    return sa.select(
        stock.c.available,
        stock.c.claimable,
        stock.c.expired,
        live(LinkStatus.CLAIMED).label("live_claimed"),
        live(LinkStatus.VOID).label("live_void"),
        closed_total(pool, closed_list_totals.c.claimed).label("closed_claimed"),
        closed_total(pool, closed_list_totals.c.void).label("closed_void"),
        count_where(links.c.pool == pool, links.c.claimed_at >= now - timedelta(days=1)).label(
            "claimed_24h"
        ),
        count_where(links.c.writeback == literal(WriteBack.PENDING), pending_pool == pool).label(
            "writeback_pending"
        ),
        count_where(links.c.writeback == literal(WriteBack.FAILED), links.c.pool == pool).label(
            "writeback_failed"
        ),
    ).select_from(stock)


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
        self.constants = statement_constants(compiled)
        self.begin = "BEGIN IMMEDIATE" if dialect.name == "sqlite" else None
        self.alone = dialect.name == "postgresql"
        datetime_type = UTCDateTime().dialect_impl(dialect)
        datetime_bind = datetime_type.bind_processor(dialect)
        datetime_result = datetime_type.result_processor(dialect, None)
        self.bind = {"p_now": datetime_bind, "p_cutoff": datetime_bind}
        self.result = {"expires_at": datetime_result, "claimed_at": datetime_result}
        self.columns = [column.name for column in CLAIM_COLUMNS]
        self.integrity_error = dialect.loaded_dbapi.IntegrityError
        self.driver_error = dialect.loaded_dbapi.Error

    def run(self, params: dict[str, Any]) -> ClaimRecord | None:
        values = self.driver_values(params)
        connection = self._connect()
        try:
            with self._statement_alone(connection):
                row = self._execute(connection, values)
        finally:
            connection.close()
        return None if row is None else self.record(row)

    def driver_values(self, params: dict[str, Any]) -> Any:
        """The statement's parameters as the driver takes them, through the bind processors."""
        params = {**self.constants, **params}
        for name, process in self.bind.items():
            if process is not None:
                params[name] = process(params[name])
        return [params[name] for name in self.positions] if self.positions else params

    def record(self, row: Sequence[Any]) -> ClaimRecord:
        """The claimed row the statement returned, through the result processors."""
        record = dict(zip(self.columns, row, strict=True))
        for name, process in self.result.items():
            if process is not None:
                record[name] = process(record[name])
        return ClaimRecord.from_row(record)

    def _connect(self) -> Any:
        """A pooled connection. ``raw_connection`` lets the driver's own error through when a
        new connection cannot be opened (the database is down): that is a DatabaseError too."""
        try:
            with translate_errors():
                return self.engine.raw_connection()
        except self.driver_error as exc:
            raise database_error(sa.exc.DBAPIError(None, None, exc)) from exc

    @contextmanager
    def _statement_alone(self, connection: Any) -> Iterator[None]:
        """On PostgreSQL the claim statement runs in autocommit: alone, it is its own
        transaction, as atomic as inside BEGIN and COMMIT, and one round trip instead of three
        (psycopg sends BEGIN on its own). ``commit`` and ``rollback`` then have nothing to do.
        The connection goes back to the pool as it came, or is discarded."""
        if not self.alone:
            yield
            return
        driver = connection.driver_connection
        try:
            driver.autocommit = True
        except self.driver_error as exc:  # psycopg refuses it on a connection not idle
            connection.invalidate(exc)
            raise database_error(sa.exc.DBAPIError(None, None, exc)) from exc
        try:
            yield
        finally:
            if not driver.closed:
                try:
                    driver.autocommit = False
                except self.driver_error as exc:  # the claim stands; the connection goes
                    connection.invalidate(exc)

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
                replace_every_connection(self.engine, connection, exc)
            else:
                connection.rollback()
            if isinstance(exc, self.integrity_error):
                raise DuplicateRecord() from exc
            raise database_error(sa.exc.DBAPIError(self.sql, None, exc)) from exc
        finally:
            cursor.close()


def claim_parameters(request: ClaimRequest) -> dict[str, Any]:
    return {
        "p_pool": request.pool,
        "p_cutoff": request.cutoff,
        "p_recipient": request.recipient,
        "p_key": request.key,
        "p_data": request.data,
        "p_now": request.now,
        "p_writeback": request.writeback,
    }


def driver_statement(dialect: sa.Dialect, query: sa.Select[Any]) -> tuple[str, Any]:
    """``query`` as the bare driver takes it: the SQL, and each parameter through its type's
    bind processor, as SQLAlchemy's own execution would pass it (an aware time as SQLite's
    naive UTC text), positional or by name as the dialect binds."""
    compiled = query.compile(dialect=dialect)
    if compiled.post_compile_params:
        raise ValueError("an expanding (IN) parameter needs SQLAlchemy's own execution")
    values = {}
    for name, value in compiled.params.items():
        process = compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect)
        values[name] = process(value) if process is not None else value
    if compiled.positiontup is not None:
        return compiled.string, [values[name] for name in compiled.positiontup]
    return compiled.string, values


def statement_constants(compiled: sa.engine.Compiled) -> dict[str, Any]:
    """Every bind of a compiled statement by name: its own values (the literals 'claimed',
    'pending'…) and None for the parameters the claim fills in on every run. ``params`` is
    public API (unlike ``construct_params(_check=False)``, which it wraps); a test pins it."""
    return dict(compiled.params)


def replace_every_connection(engine: Engine, connection: Any, error: Exception) -> None:
    """After a disconnect, as SQLAlchemy does: every pooled connection predates it, so all are
    replaced, not only this one (else each fails one claim in turn)."""
    connection.invalidate(error)
    engine.dispose()


def _is_disconnect(engine: Engine, exc: Any, driver_connection: Any) -> bool:
    """Whether ``exc`` left the connection unusable. The driver connection is what tells:
    a server shutting down (``AdminShutdown``) carries no message the dialect recognises."""
    return bool(engine.dialect.is_disconnect(exc, driver_connection, None))


__all__: list[str] = []  # internal: see linkpool.store.Store
