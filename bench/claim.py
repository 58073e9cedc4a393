"""Claim throughput and latency: ``LinkPool.claim`` beside the raw claim statement.

For each database (SQLite file, PostgreSQL) and each concurrency (1, 4, 8 processes), a fresh
pool is seeded, then every process claims ``--claims`` links as fast as it can, first through
``LinkPool.claim`` and then, on a fresh pool, with the same UPDATE … RETURNING statement sent
through the bare driver (sqlite3 / psycopg): the floor no wrapper can beat. The raw SQLite
connection sets the product's own pragmas (``linkpool.db.SQLITE_PRAGMAS``), so the comparison is
of code, not of durability settings; the raw PostgreSQL connection runs the statement alone in
autocommit, one round trip, as the product does.

``--sqlite-synchronous FULL NORMAL`` measures SQLite once per ``synchronous`` setting in the same
run (the product uses FULL; NORMAL is applied on top of the product's pragmas to show its cost).

    python bench/claim.py                       # both databases, 1/4/8 processes
    python bench/claim.py --databases sqlite --claims 500
    python bench/claim.py --databases sqlite --sqlite-synchronous FULL NORMAL
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from linkpool import LinkPool, PoolSettings
from linkpool.db import SQLITE_FILE_PRAGMAS, SQLITE_PRAGMAS, create_engine, upgrade
from linkpool.models import ListState
from linkpool.store import NewLink, Store

POOL = PoolSettings(name="bench", survey_id="SV_BenchSurvey0001")
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"

RAW_SQL = (
    "UPDATE links SET status = 'claimed', recipient = {p}, data = {p}, claimed_at = {p}, "
    "writeback = 'pending', writeback_due_at = {p} "
    "WHERE id = (SELECT id FROM links WHERE pool = {p} AND status = 'available' "
    "AND expires_at >= {p} ORDER BY expires_at LIMIT 1{lock}) "
    "RETURNING id, url, expires_at, contact_id, contact_lookup_id, claimed_at"
)


def seed(url: str, count: int) -> None:
    engine = create_engine(url)
    store = Store(engine)
    now = datetime.now(UTC)
    name = f"linkpool/bench/{uuid.uuid4()}"
    list_id = store.create_list(
        pool="bench", survey_id=POOL.survey_id, name=name, size=count, now=now
    )
    store.update_list(list_id, now=now, state=ListState.DISTRIBUTED)
    new_links = [
        NewLink(
            ext_ref=f"{name}#{n}",
            contact_id=f"CID_{n:011d}",
            contact_lookup_id=f"CGC_{n:011d}",
            url=f"https://bench.qualtrics.com/jfe/form/SV_x?Q_DL={list_id}_{n}",
            expires_at=now + timedelta(days=30 + n % 20),
        )
        for n in range(count)
    ]
    store.finish_list(list_id, "bench", new_links, now=now, shortfall=0)
    engine.dispose()


def product_engine(url: str, synchronous: str) -> sa.Engine:
    """The product's engine; ``synchronous`` other than FULL is set after the product's pragmas."""
    engine = create_engine(url)
    if synchronous != "FULL":

        @sa.event.listens_for(engine, "connect")
        def override(dbapi_connection, _record) -> None:
            dbapi_connection.execute(f"PRAGMA synchronous = {synchronous}")

    return engine


def claim_with_linkpool(url: str, claims: int, start, out, synchronous: str = "FULL") -> None:
    with LinkPool(engine=product_engine(url, synchronous), pools=[POOL]) as lp:
        lp.claim("bench", recipient="warm-up")
        latencies = []
        start.wait()
        for n in range(claims):
            t0 = time.perf_counter()
            lp.claim("bench", recipient=f"r{n}", data={"n": str(n)})
            latencies.append(time.perf_counter() - t0)
    out.put(latencies)


def claim_with_raw_driver(url: str, claims: int, start, out, synchronous: str = "FULL") -> None:
    if url.startswith("sqlite"):
        connection, statement, execute = _sqlite_raw(url, synchronous)
    else:
        connection, statement, execute = _postgres_raw(url)
    execute(statement, "warm-up")
    latencies = []
    start.wait()
    for n in range(claims):
        t0 = time.perf_counter()
        row = execute(statement, f"r{n}", f'{{"n":"{n}"}}')
        latencies.append(time.perf_counter() - t0)
        assert row is not None
    connection.close()
    out.put(latencies)


def _sqlite_raw(url: str, synchronous: str):
    import sqlite3

    connection = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
    for pragma in SQLITE_PRAGMAS + SQLITE_FILE_PRAGMAS:
        connection.execute(pragma)
    connection.execute(f"PRAGMA synchronous = {synchronous}")
    statement = RAW_SQL.format(p="?", lock="")

    def execute(sql: str, recipient: str, data: str | None = None):
        now = datetime.now(UTC).replace(tzinfo=None)
        cutoff = now + POOL.min_remaining
        connection.execute("BEGIN IMMEDIATE")
        row = connection.execute(
            sql, (recipient, data, str(now), str(now), "bench", str(cutoff))
        ).fetchone()
        connection.execute("COMMIT")
        return row

    return connection, statement, execute


def _postgres_raw(url: str):
    import psycopg

    connection = psycopg.connect(
        url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True
    )
    statement = RAW_SQL.format(p="%s", lock=" FOR UPDATE SKIP LOCKED")

    def execute(sql: str, recipient: str, data: str | None = None):
        now = datetime.now(UTC)
        return connection.execute(
            sql, (recipient, data, now, now, "bench", now + POOL.min_remaining)
        ).fetchone()

    return connection, statement, execute


def run(target, url: str, processes: int, claims: int, synchronous: str) -> dict[str, float]:
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(processes + 1)
    out = context.Queue()
    workers = [
        context.Process(target=target, args=(url, claims, start, out, synchronous))
        for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    start.wait()
    began = time.perf_counter()
    latencies = [lat for _ in workers for lat in out.get(timeout=600)]
    elapsed = time.perf_counter() - began
    for worker in workers:
        worker.join()
    latencies.sort()
    return {
        "claims_per_s": len(latencies) / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
    }


class Database:
    """A fresh database per measurement, so every run starts from the same full pool."""

    def __init__(self, kind: str, postgres_admin: str) -> None:
        self.kind = kind
        self.admin = postgres_admin
        self.tmp = Path(tempfile.mkdtemp(prefix="linkpool-bench-"))
        self.created: list[str] = []

    def fresh(self, links: int) -> str:
        if self.kind == "sqlite":
            url = f"sqlite:///{self.tmp / (uuid.uuid4().hex + '.db')}"
        else:
            name = f"linkpool_bench_{uuid.uuid4().hex[:8]}"
            with _admin(self.admin) as connection:
                connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
            self.created.append(name)
            url = sa.engine.make_url(self.admin).set(database=name).render_as_string(False)
        engine = create_engine(url)
        upgrade(engine)
        engine.dispose()
        seed(url, links)
        return url

    def cleanup(self) -> None:
        for name in self.created:
            with _admin(self.admin) as connection:
                connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _admin(url: str):
    return sa.create_engine(
        url.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT"
    ).connect()


def measure(database: Database, kind: str, processes: int, claims: int, synchronous: str) -> float:
    """One row pair (raw, LinkPool); returns LinkPool's share of raw throughput in percent."""
    links = processes * (claims + 1) + 10
    raw = run(claim_with_raw_driver, database.fresh(links), processes, claims, synchronous)
    ours = run(claim_with_linkpool, database.fresh(links), processes, claims, synchronous)
    ratio = 100 * ours["claims_per_s"] / raw["claims_per_s"]
    label = f"{kind} ({synchronous})" if kind == "sqlite" else kind
    for name, figures, share in (("raw SQL", raw, ""), ("LinkPool", ours, f"{ratio:.0f}%")):
        print(
            f"| {label} | {processes} | {name} | {figures['claims_per_s']:.0f} | "
            f"{figures['p50_ms']:.2f} | {figures['p99_ms']:.2f} | {share} |"
        )
    sys.stdout.flush()
    return ratio


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--databases", nargs="+", default=["sqlite", "postgres"])
    parser.add_argument("--processes", nargs="+", type=int, default=[1, 4, 8])
    parser.add_argument("--claims", type=int, default=1000, help="claims per process")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES)
    parser.add_argument(
        "--sqlite-synchronous",
        nargs="+",
        default=["FULL"],
        choices=["FULL", "NORMAL"],
        help="SQLite synchronous settings to measure (the product uses FULL)",
    )
    args = parser.parse_args()

    print("| database | processes | claim | claims/s | p50 ms | p99 ms | % of raw |")
    print("|---|---:|---|---:|---:|---:|---:|")
    worst = 100.0
    for kind in args.databases:
        database = Database(kind, args.postgres_url)
        settings = args.sqlite_synchronous if kind == "sqlite" else ["FULL"]
        try:
            for processes in args.processes:
                for synchronous in settings:
                    worst = min(worst, measure(database, kind, processes, args.claims, synchronous))
        finally:
            database.cleanup()
    print(f"\nworst LinkPool share of raw throughput: {worst:.0f}% (target: at least 70%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
