"""Shared fixtures: a movable clock, fresh migrated SQLite databases, and a PostgreSQL database
created for the test session (dropped at its end).

PostgreSQL comes from ``LINKPOOL_TEST_POSTGRES_URL``, else the local server at
``postgresql://postgres@127.0.0.1:5432/test``. Without a server those tests skip with the reason,
except under ``CI=true``, where they fail.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from linkpool.clock import ManualClock
from linkpool.config import normalize_database_url
from linkpool.db import create_engine, upgrade
from linkpool.models import ListState, metadata
from linkpool.store import NewLink, Store

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
START = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
SURVEY_ID = "SV_TestSurvey00001"

SeedLinks = Callable[..., list[int]]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    url = f"sqlite:///{tmp_path / 'linkpool.db'}"
    engine = create_engine(url)
    upgrade(engine)
    engine.dispose()
    return url


@pytest.fixture
def engine(sqlite_url: str) -> Iterator[sa.engine.Engine]:
    engine = create_engine(sqlite_url)
    yield engine
    engine.dispose()


@pytest.fixture
def store(engine: sa.engine.Engine) -> Store:
    return Store(engine)


def seed_links(
    store: Store,
    pool: str,
    count: int,
    *,
    now: datetime,
    expires_at: datetime,
    survey_id: str = SURVEY_ID,
) -> list[int]:
    """Store one ready list of ``count`` available links, as refill would. Returns link ids."""
    name = f"linkpool/{pool}/{uuid.uuid4()}"
    list_id = store.create_list(pool=pool, survey_id=survey_id, name=name, size=count, now=now)
    store.update_list(
        list_id,
        now=now,
        state=ListState.DISTRIBUTED,
        mailing_list_id="CG_" + uuid.uuid4().hex[:15],
        distribution_id="EMD_" + uuid.uuid4().hex[:15],
        expires_at=expires_at,
    )
    token = uuid.uuid4().hex[:8]
    new_links = [
        NewLink(
            ext_ref=f"{name}#{n}",
            contact_id=f"CID_{token}{n:07d}",
            contact_lookup_id=f"CGC_{token}{n:07d}",
            url=f"https://sim1.qualtrics.com/jfe/form/{survey_id}?Q_DL={token}_{n}&Q_CHL=gl",
            expires_at=expires_at,
        )
        for n in range(count)
    ]
    assert store.finish_list(list_id, pool, new_links, now=now, shortfall=0)
    with store.read() as connection:
        query = sa.text("SELECT id FROM links WHERE list_id = :list_id ORDER BY id")
        return list(connection.execute(query, {"list_id": list_id}).scalars())


@pytest.fixture
def seed() -> SeedLinks:
    return seed_links


def _postgres_admin_url() -> str:
    return normalize_database_url(
        os.environ.get("LINKPOOL_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)
    )


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for this test session."""
    admin_url = _postgres_admin_url()
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any failure to connect means "no server"
        admin.dispose()
        reason = f"no PostgreSQL at {sa.engine.make_url(admin_url).render_as_string()}: {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true requires PostgreSQL; {reason}")
        pytest.skip(reason)
    name = f"linkpool_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.engine.make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    engine = create_engine(url)
    upgrade(engine)
    engine.dispose()
    try:
        yield url
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def pg_engine(postgres_url: str) -> Iterator[sa.engine.Engine]:
    """An engine on the session's PostgreSQL database, emptied before the test."""
    engine = create_engine(postgres_url)
    with engine.begin() as connection:
        names = ", ".join(table.name for table in reversed(metadata.sorted_tables))
        connection.execute(sa.text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    yield engine
    engine.dispose()


@pytest.fixture
def pg_store(pg_engine: sa.engine.Engine) -> Store:
    return Store(pg_engine)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "postgres_url" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.postgres)
