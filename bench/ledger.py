"""Seed a claim history directly with SQL: ``claims`` claimed links in deleted lists.

Refill, claims and gc would take hours to leave 10 million claims behind; one INSERT … SELECT
per million rows takes seconds. The rows look like what gc leaves: lists of ``list_size``
links in state ``deleted``, every link claimed (recipient, key, data, claimed time spread
evenly over ``span`` ending ``end``, write-back done), ``answered`` in every 100 of them with
a response recorded an hour after the claim (``finished`` of those finished, enrichment done),
and the pool's ``closed_list_totals`` row holding their sums, as gc would have added them.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa

from linkpool.models import lists

BATCH = 1_000_000

_POSTGRES_LINKS = """
INSERT INTO links (list_id, pool, ext_ref, contact_id, contact_lookup_id, url, expires_at,
                   status, recipient, idempotency_key, data, claimed_at, writeback,
                   response_id, response_finished, responded_at, enrichment)
SELECT CAST(:first_list AS bigint) + (n - 1) / CAST(:list_size AS bigint), p.pool,
       p.pool || '/h#' || n, 'CID_h' || n, 'CGC_h' || n,
       'https://bench.qualtrics.com/jfe/form/SV_h?Q_DL=' || p.pool || n,
       p.start + (n * p.step + 2592000) * interval '1 second',
       'claimed', 'recipient-' || n, 'key-' || n, '{"order":"' || n || '"}',
       p.start + n * p.step * interval '1 second', 'done',
       CASE WHEN n % 100 < p.answered THEN 'R_h' || p.pool || n END,
       CASE WHEN n % 100 < p.answered THEN n % 100 < p.finished END,
       CASE WHEN n % 100 < p.answered THEN p.start + (n * p.step + 3600) * interval '1 second' END,
       CASE WHEN n % 100 < p.answered THEN 'done' END
FROM (SELECT CAST(:pool AS text) AS pool, CAST(:start AS timestamptz) AS start,
             CAST(:step AS float8) AS step, CAST(:answered AS int) AS answered,
             CAST(:finished AS int) AS finished) AS p,
     generate_series(CAST(:low AS bigint), CAST(:high AS bigint)) AS n
"""

_SQLITE_LINKS = """
WITH RECURSIVE seq(n) AS (SELECT :low UNION ALL SELECT n + 1 FROM seq WHERE n < :high)
INSERT INTO links (list_id, pool, ext_ref, contact_id, contact_lookup_id, url, expires_at,
                   status, recipient, idempotency_key, data, claimed_at, writeback,
                   response_id, response_finished, responded_at, enrichment)
SELECT :first_list + (n - 1) / :list_size, :pool, :pool || '/h#' || n, 'CID_h' || n,
       'CGC_h' || n, 'https://bench.qualtrics.com/jfe/form/SV_h?Q_DL=' || :pool || n,
       datetime(:start, '+' || CAST(n * :step + 2592000 AS INTEGER) || ' seconds') || '.000000',
       'claimed', 'recipient-' || n, 'key-' || n, '{"order":"' || n || '"}',
       datetime(:start, '+' || CAST(n * :step AS INTEGER) || ' seconds') || '.000000', 'done',
       CASE WHEN n % 100 < :answered THEN 'R_h' || :pool || n END,
       CASE WHEN n % 100 < :answered THEN n % 100 < :finished END,
       CASE WHEN n % 100 < :answered
            THEN datetime(:start, '+' || CAST(n * :step + 3600 AS INTEGER) || ' seconds')
                 || '.000000' END,
       CASE WHEN n % 100 < :answered THEN 'done' END
FROM seq
"""


def seed_history(
    engine: sa.engine.Engine,
    pool: str,
    claims: int,
    *,
    end: datetime,
    span: timedelta = timedelta(days=365),
    list_size: int = 1000,
    answered: int = 0,
    finished: int = 0,
) -> None:
    """Add ``claims`` claims of deleted lists to ``pool``, made in [end - span, end):
    ``answered`` in every 100 answered, ``finished`` of those (at most ``answered``)
    finished."""
    if claims <= 0:
        return
    assert 0 <= finished <= answered <= 100, (answered, finished)
    list_count = -(-claims // list_size)
    start = end - span
    step = span.total_seconds() / (claims + 1)
    postgres = engine.dialect.name == "postgresql"
    with engine.begin() as connection:
        first_list = _insert_lists(connection, pool, list_count, list_size, start, end)
        connection.execute(
            sa.text(
                "INSERT INTO closed_list_totals (pool, lists, claimed, void, answered, finished)"
                " VALUES (:pool, :lists, :claimed, 0, :answered, :finished)"
            ),
            {
                "pool": pool,
                "lists": list_count,
                "claimed": claims,
                "answered": per_100(claims, answered),
                "finished": per_100(claims, finished),
            },
        )
    statement = sa.text(_POSTGRES_LINKS if postgres else _SQLITE_LINKS)
    start_text = start.isoformat() if postgres else start.strftime("%Y-%m-%d %H:%M:%S")
    for low in range(1, claims + 1, BATCH):
        with engine.begin() as connection:
            connection.execute(
                statement,
                {
                    "first_list": first_list,
                    "list_size": list_size,
                    "pool": pool,
                    "start": start_text,
                    "step": step,
                    "low": low,
                    "high": min(low + BATCH - 1, claims),
                    "answered": answered,
                    "finished": finished,
                },
            )


def per_100(claims: int, share: int) -> int:
    """How many of the claims numbered 1 to ``claims`` have ``n % 100 < share``."""
    return claims // 100 * share + max(0, min(claims % 100, share - 1))


def _insert_lists(
    connection: sa.Connection, pool: str, count: int, size: int, start: datetime, end: datetime
) -> int:
    """``count`` deleted lists with consecutive ids; returns the first id."""
    first = int(connection.execute(sa.text("SELECT COALESCE(MAX(id), 0) + 1 FROM lists")).scalar())
    rows = [
        {
            "id": first + n,
            "pool": pool,
            "survey_id": "SV_History",
            "name": f"linkpool/{pool}/history-{n}",
            "state": "deleted",
            "size": size,
            "mailing_list_id": f"CG_h{pool}{n}",
            "distribution_id": f"EMD_h{pool}{n}",
            "expires_at": end,
            "created_at": start,
            "updated_at": end,
            "deleted_at": end,
        }
        for n in range(count)
    ]
    connection.execute(sa.insert(lists), rows)
    if connection.dialect.name == "postgresql":  # explicit ids leave the sequence behind
        connection.execute(
            sa.text("SELECT setval(pg_get_serial_sequence('lists', 'id'), MAX(id)) FROM lists")
        )
    return first
