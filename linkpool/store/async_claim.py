"""The claim statement on asyncio: how ``linkpool serve`` claims on PostgreSQL.

A worker's event loop sends the claim itself, on psycopg's async connections (a
``psycopg_pool.AsyncConnectionPool`` of ``[service] connections``, in autocommit), instead of
handing each claim to a thread: no thread hop and no hand-over of the GIL per claim, which
took a worker from about 1,800 to about 3,000 claims a second at 8 connections
(docs/benchmarks.md). It is the same statement, compiled once (``CompiledClaim``), with the
same bind and result processing, so the two paths cannot drift apart.

Only the claim runs here. ``AsyncClaims.claim`` answers ``None`` where the thread path must
take over: no claimable link (the thread path counts what is too old for ``PoolExhausted``), a
repeated idempotency key (it looks the first claim up), or no connection within
``CONNECTION_WAIT`` (the database is down or every connection is busy: the thread path then
answers, or fails fast with DatabaseError). A statement that was sent and failed is a
DatabaseError: it is never sent again, since it may have claimed a link.
"""

from __future__ import annotations

from typing import Any

import psycopg
import psycopg_pool
import sqlalchemy as sa

from linkpool.db import database_error
from linkpool.store.claims import CompiledClaim, claim_parameters
from linkpool.store.records import ClaimRecord, ClaimRequest

CONNECTION_WAIT = 1.0
"""Seconds a claim waits for one of the pool's connections before the thread path takes it."""


class AsyncClaims:
    """The claim statement on a pool of psycopg async connections (PostgreSQL only)."""

    def __init__(self, compiled: CompiledClaim, url: sa.URL, size: int) -> None:
        self.compiled = compiled
        conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
        self.pool = psycopg_pool.AsyncConnectionPool(
            conninfo,
            min_size=size,
            max_size=size,
            kwargs={"autocommit": True},
            open=False,
            timeout=CONNECTION_WAIT,
            name="linkpool-claims",
        )

    async def open(self) -> None:
        """Start connecting; claims wait for the first connections (or take the thread path)."""
        await self.pool.open(wait=False)

    async def close(self) -> None:
        await self.pool.close()

    async def claim(self, request: ClaimRequest) -> ClaimRecord | None:
        """The claimed link, or None where the thread path must answer (see the module)."""
        values = self.compiled.driver_values(claim_parameters(request))
        try:
            async with self.pool.connection() as connection:
                row = await self._execute(connection, values)
        except psycopg_pool.PoolTimeout:
            return None
        except psycopg.IntegrityError:
            return None  # the key was used already
        return None if row is None else self.compiled.record(row)

    async def _execute(self, connection: psycopg.AsyncConnection[Any], values: Any) -> Any:
        try:
            cursor = await connection.execute(self.compiled.sql, values)
            return await cursor.fetchone()
        except psycopg.IntegrityError:
            raise
        except psycopg.Error as exc:
            if connection.broken:
                await self.pool.check()  # the others predate the same failure
            raise database_error(sa.exc.DBAPIError(self.compiled.sql, None, exc)) from exc


__all__: list[str] = []  # internal: see linkpool.service.app
