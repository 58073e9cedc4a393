"""Ledger scale: what a long claim history costs the claim, the counts, status and export.

For each database (SQLite file, PostgreSQL) and each history size N, a fresh database is
migrated; N claims of deleted lists are seeded with SQL (``bench/ledger.py``: a year of claims
that gc has closed, 30% of them answered, 27% finished), then the live part, the same at every N: one ready list of 12,000
available links. Then, in this order, in one run:

- the claim: 8 processes claim 250 links each through ``LinkPool.claim`` (claims/s, p50, p99);
  these 2,008 claims are the last day's;
- ``LinkPool.counts`` 20 times (median), checking ``claimed`` is exactly N + 2,008; then
  ``LinkPool.response_counts`` (what status, the service and the metrics add per pool) 20
  times, its median on stderr, checking ``answered`` and ``finished`` are exact;
- ``linkpool status --json`` (the CLI, median of 3 runs, Python start-up included);
- ``linkpool export --since 1d`` and ``linkpool export`` of everything (CSV into a file): time,
  rows and the process's peak memory; then the export's rate without Python's start-up
  (``write_claims`` in this process, into /dev/null);
- the database's own bulk export of the same rows and columns, as the baseline: ``COPY (…) TO
  STDOUT`` on PostgreSQL, the ``sqlite3`` shell's ``-csv`` on SQLite;
- at the largest N, the plans of gc's, sync's, refill's and the counts' queries, captured as
  the store runs them (``--plans``).

``--hot-row`` also measures what a per-pool counter row maintained in the claim's transaction
would cost 8 concurrent claimers on PostgreSQL (the raw claim statement with and without one
``UPDATE`` of a shared row), the alternative to ``closed_list_totals``.

    python bench/scale.py                    # N = 0, 1 M, 10 M on both databases
    python bench/scale.py --quick            # N = 0 and 100 k
    python bench/scale.py --sizes 0 1000000 --databases postgres --plans --hot-row
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from capture import captured_selects
from claim import POOL, RAW_SQL, Database, claim_with_linkpool, run
from ledger import per_100, seed_history

from linkpool import LinkPool
from linkpool.db import create_engine
from linkpool.export import write_claims
from linkpool.models import LinkStatus, ListState, links, lists
from linkpool.store import Store
from linkpool.store.claims import EXPORT_COLUMNS

LINKPOOL = str(Path(sys.executable).with_name("linkpool"))
LIVE_LINKS = 12_000
CLAIMERS, CLAIMS_EACH = 8, 250
LIVE_CLAIMS = CLAIMERS * (CLAIMS_EACH + 1)  # each claimer's warm-up claim included
ANSWERED = {"answered": 30, "finished": 27}  # per 100 claims of the history


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--databases", nargs="+", default=["sqlite", "postgres"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[0, 1_000_000, 10_000_000])
    parser.add_argument("--quick", action="store_true", help="N = 0 and 100,000")
    parser.add_argument("--plans", action="store_true", help="query plans at the largest N")
    parser.add_argument("--hot-row", action="store_true", help="the counter-row experiment")
    parser.add_argument("--postgres-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    sizes = [0, 100_000] if args.quick else args.sizes

    print(
        "| database | N | claims/s | claim p50 ms | claim p99 ms | counts ms | status s |"
        " export 1 d: rows, s | export all: rows, s, peak MB | export rows/s |"
        " bulk export rows/s | export / bulk |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---|---|---:|---:|---:|")
    plans: dict[str, dict[str, list[str]]] = {}
    for kind in args.databases:
        database = Database(kind, args.postgres_url)
        try:
            for size in sizes:
                url = database.fresh(LIVE_LINKS)
                print(measure(kind, url, size), flush=True)
                if args.plans and size == max(sizes):
                    plans[kind] = query_plans(url)
        finally:
            database.cleanup()
    for kind, by_query in plans.items():
        print(f"\n### Plans on {kind}, N = {max(sizes):,}\n")
        for name, lines in by_query.items():
            print(f"`{name}`\n```\n" + "\n".join(lines) + "\n```")
    if args.hot_row:
        print(hot_row(args.postgres_url))
    return 0


def measure(kind: str, url: str, size: int) -> str:
    engine = create_engine(url)
    began = time.perf_counter()
    seed_history(engine, "bench", size, end=datetime.now(UTC) - timedelta(days=1), **ANSWERED)
    analyze(engine)
    seeded = time.perf_counter() - began
    engine.dispose()
    claim = run(claim_with_linkpool, url, CLAIMERS, CLAIMS_EACH, "FULL")
    counts_ms = time_counts(url, expected_claimed=size + LIVE_CLAIMS)
    responses_ms = time_response_counts(url, size)
    config = write_config(url)
    status_s = statistics.median(timed_cli(config, "status", "--json")[0] for _ in range(3))
    day_s, day_rows, _ = export(config, "--since", "1d")
    all_s, all_rows, peak_mb = export(config)
    assert day_rows == LIVE_CLAIMS and all_rows == size + LIVE_CLAIMS, (day_rows, all_rows)
    bulk_s, bulk_rows = bulk_export(kind, url)
    assert bulk_rows == all_rows, (bulk_rows, all_rows)
    library_s = export_in_process(url)
    rate, bulk_rate = all_rows / library_s, bulk_rows / bulk_s
    print(
        f"<!-- {kind} N={size}: seeded in {seeded:.0f} s;"
        f" response_counts {responses_ms:.2f} ms -->",
        file=sys.stderr,
    )
    return (
        f"| {kind} | {size:,} | {claim['claims_per_s']:.0f} | {claim['p50_ms']:.2f} |"
        f" {claim['p99_ms']:.2f} | {counts_ms:.2f} | {status_s:.2f} |"
        f" {day_rows:,}, {day_s:.2f} | {all_rows:,}, {all_s:.1f}, {peak_mb:.0f} | {rate:,.0f} |"
        f" {bulk_rate:,.0f} | {100 * rate / bulk_rate:.0f}% |"
    )


def analyze(engine: sa.engine.Engine) -> None:
    """Fresh statistics (and, on PostgreSQL, a visibility map for index-only scans), as
    autovacuum would leave them on a database that has been running for a while."""
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(sa.text("VACUUM ANALYZE"))
    else:
        with engine.begin() as connection:
            connection.execute(sa.text("ANALYZE"))


def time_counts(url: str, *, expected_claimed: int) -> float:
    with LinkPool(database_url=url, pools=[POOL]) as lp:
        lp.counts("bench")
        timings = []
        for _ in range(20):
            began = time.perf_counter()
            counts = lp.counts("bench")
            timings.append(time.perf_counter() - began)
    assert counts.claimed == expected_claimed, (counts.claimed, expected_claimed)
    return statistics.median(timings) * 1000


def time_response_counts(url: str, size: int) -> float:
    """Median ms of ``LinkPool.response_counts``; the history's answers counted exactly (the
    live claims have none)."""
    expected = {name: per_100(size, share) for name, share in ANSWERED.items()}
    with LinkPool(database_url=url, pools=[POOL]) as lp:
        lp.response_counts("bench")
        timings = []
        for _ in range(20):
            began = time.perf_counter()
            counts = lp.response_counts("bench")
            timings.append(time.perf_counter() - began)
    found = {"answered": counts.answered, "finished": counts.finished}
    assert found == expected, (found, expected)
    return statistics.median(timings) * 1000


def write_config(url: str) -> Path:
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"linkpool-scale-{os.getpid()}.toml"
    path.write_text(
        f'[database]\nurl = "{url}"\n\n[pools.bench]\nsurvey_id = "{POOL.survey_id}"\n',
        encoding="utf-8",
    )
    return path


def timed_cli(config: Path, *args: str) -> tuple[float, int]:
    """Run ``linkpool --config CONFIG ARGS`` to completion: (seconds, peak RSS in MB).

    The peak comes from GNU time, not from this process's ``wait4``: a child forked from this
    (large) process is charged this process's pages until it execs."""
    began = time.perf_counter()
    result = subprocess.run(
        ["/usr/bin/time", "-f", "maxrss-kb %M", LINKPOOL, "--config", str(config), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - began
    assert result.returncode == 0, result.stderr
    peak_kb = int(result.stderr.rsplit("maxrss-kb ", 1)[1].split()[0])
    return elapsed, peak_kb // 1024


def export(config: Path, *args: str) -> tuple[float, int, float]:
    """``linkpool export bench`` into a file: (seconds, rows, peak RSS in MB)."""
    output = config.with_suffix(".csv")
    elapsed, peak = timed_cli(config, "export", "bench", "--output", str(output), *args)
    with output.open("rb") as handle:
        rows = sum(1 for _ in handle) - 1
    output.unlink()
    return elapsed, rows, peak


def export_in_process(url: str) -> float:
    """Seconds ``write_claims`` (what the CLI runs, without Python's start-up) takes to write
    every claim as CSV to /dev/null."""
    engine = create_engine(url)
    try:
        with open(os.devnull, "w", encoding="utf-8", newline="") as sink:
            began = time.perf_counter()
            write_claims(Store(engine), "bench", sink, "csv")
            return time.perf_counter() - began
    finally:
        engine.dispose()


def export_select(dialect: sa.Dialect) -> str:
    """The export's rows and columns, as literal SQL for the bulk exporters."""
    query = (
        sa.select(*EXPORT_COLUMNS)
        .join(lists, lists.c.id == links.c.list_id)
        .where(links.c.pool == "bench", links.c.status == LinkStatus.CLAIMED)
        .order_by(links.c.claimed_at, links.c.id)
    )
    return str(query.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))


def bulk_export(kind: str, url: str) -> tuple[float, int]:
    """The database's own export of the same rows: (seconds, rows)."""
    engine = create_engine(url)
    sql = export_select(engine.dialect)
    try:
        if kind == "sqlite":
            path = url.removeprefix("sqlite:///")
            began = time.perf_counter()
            result = subprocess.run(
                ["sqlite3", "-csv", path, sql], check=True, stdout=subprocess.PIPE
            )
            return time.perf_counter() - began, result.stdout.count(b"\n")
        connection = engine.raw_connection()
        try:
            cursor = connection.driver_connection.cursor()  # type: ignore[union-attr]
            began = time.perf_counter()
            rows = 0
            with cursor.copy(f"COPY ({sql}) TO STDOUT (FORMAT csv)") as copy:
                for block in copy:
                    rows += bytes(block).count(b"\n")
            return time.perf_counter() - began, rows
        finally:
            connection.close()
    finally:
        engine.dispose()


def query_plans(url: str) -> dict[str, list[str]]:
    """The plans of the queries the store sends for each job's question, as it sends them."""
    engine = create_engine(url)
    store = Store(engine)
    now = datetime.now(UTC)
    some_list = store.lists_in_states([ListState.READY], pool="bench")[0].id
    questions: dict[str, Callable[[], Any]] = {
        "counts (status, refill, gc, metrics)": lambda: store.counts("bench", now, timedelta(0)),
        "response_counts (status, service, metrics)": lambda: store.response_counts("bench", now),
        "gc: expired_lists": lambda: store.expired_lists(now=now, expired_before=now),
        "gc: lists_being_reaped": lambda: store.lists_being_reaped(now=now),
        "gc: abandoned_lists": lambda: store.abandoned_lists(now=now, stale_before=now),
        "gc: live_claims (before each delete)": lambda: store.live_claims(some_list, now=now),
        "gc: unclaimable_links": lambda: store.unclaimable_links("bench", cutoff=now),
        "sync: due_writebacks": lambda: store.due_writebacks(now=now, limit=100),
        "refill: resume (lists_in_states)": lambda: store.lists_in_states(
            ListState.PROVISIONING, "bench"
        ),
        "export --since": lambda: next(store.iter_claims("bench", now - timedelta(days=1))),
    }
    plans = {}
    try:
        for name, ask in questions.items():
            plans[name] = [
                line
                for sql, params in captured(engine, ask)
                for line in explain(engine, sql, params)
            ]
    finally:
        engine.dispose()
    return plans


def captured(engine: sa.engine.Engine, ask: Callable[[], Any]) -> list[tuple[str, Any]]:
    with captured_selects(engine) as statements:
        ask()
    return statements


def explain(engine: sa.engine.Engine, sql: str, params: Any) -> list[str]:
    prefix = (
        "EXPLAIN (COSTS OFF) " if engine.dialect.name == "postgresql" else "EXPLAIN QUERY PLAN "
    )
    connection = engine.raw_connection()
    try:
        cursor = connection.cursor()
        cursor.execute(prefix + sql, params)
        rows = cursor.fetchall()
    finally:
        connection.close()
    if engine.dialect.name == "postgresql":
        return [row[0] for row in rows]
    return [f"{'  ' * _depth(rows, row)}{row[-1]}" for row in rows]


def _depth(rows: list[Any], row: Any) -> int:
    parents = {r[0]: r[1] for r in rows}
    depth, parent = 0, row[1]
    while parent:
        depth, parent = depth + 1, parents.get(parent, 0)
    return depth


COUNTER_ROW = "UPDATE pool_counter SET claimed = claimed + 1 WHERE pool = 'bench'"


def claim_alone(url: str, claims: int, start: Any, out: Any, _synchronous: str) -> None:
    claim_raw(url, claims, start, out, counter=False)


def claim_and_count(url: str, claims: int, start: Any, out: Any, _synchronous: str) -> None:
    claim_raw(url, claims, start, out, counter=True)


def claim_raw(url: str, claims: int, start: Any, out: Any, *, counter: bool) -> None:
    """bench/claim.py's raw PostgreSQL claim, optionally bumping a shared counter row in the
    same transaction (the row lock is then held until the commit's WAL flush)."""
    import psycopg

    connection = psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"))
    statement = RAW_SQL.format(p="%s", lock=" FOR UPDATE SKIP LOCKED")

    def claim_one(recipient: str) -> None:
        now = datetime.now(UTC)
        params = (recipient, None, now, now, "bench", now + POOL.min_remaining)
        assert connection.execute(statement, params).fetchone() is not None
        if counter:
            connection.execute(COUNTER_ROW)
        connection.commit()

    claim_one("warm-up")
    latencies = []
    start.wait()
    for n in range(claims):
        began = time.perf_counter()
        claim_one(f"r{n}")
        latencies.append(time.perf_counter() - began)
    connection.close()
    out.put(latencies)


def hot_row(admin_url: str) -> str:
    """8 processes, the raw claim statement on PostgreSQL: alone, then with a counter row."""
    database = Database("postgres", admin_url)
    lines = ["\n### A per-pool counter row in the claim's transaction (PostgreSQL, 8 processes)\n"]
    lines.append("| claim | claims/s | p50 ms | p99 ms |\n|---|---:|---:|---:|")
    try:
        for _ in range(2):
            for label, target in (("alone", claim_alone), ("+ counter row", claim_and_count)):
                url = database.fresh(CLAIMERS * 1001 + 10)
                engine = create_engine(url)
                with engine.begin() as connection:
                    connection.execute(
                        sa.text("CREATE TABLE pool_counter (pool text PRIMARY KEY, claimed int)")
                    )
                    connection.execute(sa.text("INSERT INTO pool_counter VALUES ('bench', 0)"))
                engine.dispose()
                figures = run(target, url, CLAIMERS, 1000, "FULL")
                lines.append(
                    f"| {label} | {figures['claims_per_s']:.0f} | {figures['p50_ms']:.2f} |"
                    f" {figures['p99_ms']:.2f} |"
                )
    finally:
        database.cleanup()
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
