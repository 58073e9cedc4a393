"""What the service's unit tests share: a LinkPool on SQLite, keys, and the app under test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta

import pytest
from starlette.testclient import TestClient

from linkpool.clock import ManualClock
from linkpool.config import PoolSettings, ServiceSettings
from linkpool.pool import LinkPool
from linkpool.service.app import create_app
from linkpool.service.keys import create_key
from linkpool.store import Store
from tests.conftest import SURVEY_ID, SeedLinks

DAY = timedelta(days=1)
POOLS = ("nps", "other")


@dataclass
class Harness:
    lp: LinkPool
    store: Store
    client: TestClient
    admin_key: str  # every pool
    nps_key: str  # only "nps"
    stock: Callable[..., list[int]]

    def auth(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.admin_key}"}

    def claim(self, pool: str = "nps", body: object = None, key: str | None = None, **kw):
        headers = {**self.auth(kw.pop("api_key", None)), **kw.pop("headers", {})}
        if key is not None:
            headers["Idempotency-Key"] = key
        payload = {"recipient": "cust-1"} if body is None else body
        return self.client.post(f"/v1/pools/{pool}/claims", json=payload, headers=headers, **kw)


def make_harness(
    sqlite_url: str,
    clock: ManualClock,
    store: Store,
    seed: SeedLinks,
    settings: ServiceSettings | None = None,
) -> Iterator[Harness]:
    pools = [PoolSettings(name=name, survey_id=SURVEY_ID) for name in POOLS]
    lp = LinkPool(database_url=sqlite_url, pools=pools, clock=clock)
    _, admin = create_key(lp.store, "admin", None, now=clock.now())
    _, nps = create_key(lp.store, "nps-only", ["nps"], now=clock.now())

    def stock(count: int, days: float = 30, pool: str = "nps") -> list[int]:
        return seed(store, pool, count, now=clock.now(), expires_at=clock.now() + days * DAY)

    app = create_app(lp, settings or ServiceSettings())
    with TestClient(app, raise_server_exceptions=False) as client:
        yield Harness(lp, lp.store, client, admin, nps, stock)
    lp.close()


@pytest.fixture(name="svc")
def svc_fixture(
    sqlite_url: str, clock: ManualClock, store: Store, seed: SeedLinks
) -> Iterator[Harness]:
    yield from make_harness(sqlite_url, clock, store, seed)
