"""Queries on ``api_keys``: the service's keys, stored as hashes (see linkpool/service/keys.py)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from linkpool.models import api_keys
from linkpool.store.base import StoreBase
from linkpool.store.records import ApiKeyRecord


class KeyQueries(StoreBase):
    def insert_api_key(
        self,
        name: str,
        *,
        key_hash: str,
        prefix: str,
        pools: tuple[str, ...] | None,
        now: datetime,
    ) -> ApiKeyRecord:
        """Store a new key's hash; DuplicateRecord if the name (or the hash) is taken."""
        values = {
            "name": name,
            "key_hash": key_hash,
            "key_prefix": prefix,
            "pools": json.dumps(list(pools)) if pools is not None else None,
            "created_at": now,
        }
        with self.write() as connection:
            connection.execute(sa.insert(api_keys).values(**values))
        return ApiKeyRecord(name=name, prefix=prefix, pools=pools, created_at=now)

    def api_keys(self) -> list[ApiKeyRecord]:
        """Every key, revoked ones too, oldest first."""
        query = sa.select(api_keys).order_by(api_keys.c.created_at, api_keys.c.id)
        with self.read() as connection:
            return [_record(row) for row in connection.execute(query).mappings()]

    def revoke_api_key(self, name: str, *, now: datetime) -> ApiKeyRecord | None:
        """Mark the key revoked (a revoked key keeps its first revocation time); None if
        there is no key of that name."""
        statement = (
            sa.update(api_keys)
            .where(api_keys.c.name == name, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        with self.write() as connection:
            connection.execute(statement)
            found = connection.execute(sa.select(api_keys).where(api_keys.c.name == name))
            row = found.mappings().first()
        return _record(row) if row is not None else None

    def live_api_keys(self) -> dict[str, ApiKeyRecord]:
        """Every key not revoked, by its hash: what a worker of the service caches."""
        query = sa.select(api_keys).where(api_keys.c.revoked_at.is_(None))
        with self.read() as connection:
            rows = connection.execute(query).mappings().all()
        return {row["key_hash"]: _record(row) for row in rows}


def _record(row: Mapping[Any, Any]) -> ApiKeyRecord:
    pools = tuple(json.loads(row["pools"])) if row["pools"] is not None else None
    return ApiKeyRecord(
        name=row["name"],
        prefix=row["key_prefix"],
        pools=pools,
        created_at=row["created_at"],
        revoked_at=row["revoked_at"],
    )


__all__: list[str] = []  # internal: see linkpool.store.Store
