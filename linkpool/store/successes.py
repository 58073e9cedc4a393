"""Queries on ``job_successes``: when a job last succeeded for a pool."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from linkpool.models import job_successes
from linkpool.store.base import StoreBase


class SuccessQueries(StoreBase):
    def record_success(self, job: str, pool: str, *, now: datetime) -> None:
        """Remember that ``job`` succeeded for ``pool`` at ``now`` (an upsert in two steps:
        the row is written by the pool's lease holder only, so they never race)."""
        key = (job_successes.c.job == job, job_successes.c.pool == pool)
        with self.write() as connection:
            updated = connection.execute(
                sa.update(job_successes).where(*key).values(succeeded_at=now)
            )
            if updated.rowcount == 0:
                connection.execute(
                    sa.insert(job_successes).values(job=job, pool=pool, succeeded_at=now)
                )

    def last_success(self, job: str, pool: str) -> datetime | None:
        query = sa.select(job_successes.c.succeeded_at).where(
            job_successes.c.job == job, job_successes.c.pool == pool
        )
        with self.read() as connection:
            value: datetime | None = connection.execute(query).scalar()
            return value


__all__: list[str] = []  # internal: see linkpool.store.Store
