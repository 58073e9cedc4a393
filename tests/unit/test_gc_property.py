"""The gc invariant under random histories: every claimed, unexpired link still opens.

Hypothesis drives random sequences of provisioning (complete, failed, or stuck half-way),
claims, clock moves and gc runs against the simulator, and checks after every step that no
claimed link that has not expired was broken, and that gc leaves no expired list behind.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from linkpool.clock import ManualClock
from linkpool.config import GcSettings, PoolSettings, Settings
from linkpool.db import create_engine, upgrade
from linkpool.errors import PoolExhausted
from linkpool.gc import collect
from linkpool.models import LinkStatus, ListState, links, lists
from linkpool.pool import LinkPool
from linkpool.simulator import Simulator
from linkpool.store import Store
from tests.provision import SURVEY_ID, provision_list

GRACE = timedelta(hours=1)

steps = st.one_of(
    st.tuples(
        st.just("provision"),
        st.integers(min_value=13, max_value=96),  # link life in hours
        st.sampled_from(["ready", "failed", "stuck"]),
    ),
    st.tuples(st.just("claim"), st.integers(min_value=1, max_value=3)),
    st.tuples(st.just("advance"), st.integers(min_value=1, max_value=60)),  # hours
    st.tuples(st.just("gc")),
)


@pytest.fixture(scope="module")
def template_db(tmp_path_factory) -> bytes:
    """A migrated database, copied for every example (migrating each time would be slow)."""
    path = tmp_path_factory.mktemp("template") / "linkpool.db"
    engine = create_engine(f"sqlite:///{path}")
    upgrade(engine)
    with engine.connect() as connection:
        connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    engine.dispose()
    return path.read_bytes()


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(history=st.lists(steps, min_size=1, max_size=14))
def test_gc_never_breaks_a_claimed_unexpired_link(history, template_db, tmp_path) -> None:
    path = tmp_path / f"{uuid.uuid4().hex}.db"
    path.write_bytes(template_db)
    url = f"sqlite:///{path}"
    clock = ManualClock(datetime(2026, 11, 22, 9, 0, tzinfo=UTC))
    sim = Simulator(clock=clock)
    pool = PoolSettings(
        name="nps",
        survey_id=SURVEY_ID,
        link_ttl=timedelta(days=30),
        min_remaining=timedelta(hours=12),
    )
    config = Settings(database_url=url, pools={"nps": pool}, gc=GcSettings(grace=GRACE))
    engine = create_engine(url)
    store = Store(engine)
    linkpool = LinkPool.from_settings(config, clock=clock, engine=engine)
    try:
        with sim.client() as client:
            for step in history:
                run_step(step, client, store, clock, linkpool, config)
                check_invariant(sim, store, clock)
                if step[0] == "gc":
                    check_nothing_expired_is_left(store, clock)
    finally:
        engine.dispose()


def run_step(step, client, store, clock, linkpool, config) -> None:
    kind = step[0]
    if kind == "provision":
        _, hours, outcome = step
        until = ListState.LIST_CREATED if outcome == "stuck" else ListState.READY
        provision_list(
            client,
            store,
            clock,
            size=2,
            ttl=timedelta(hours=hours),
            until=until,
            failed=outcome == "failed",
        )
    elif kind == "claim":
        for n in range(step[1]):
            try:
                linkpool.claim("nps", recipient=f"r{n}")
            except PoolExhausted:
                return
    elif kind == "advance":
        clock.advance(timedelta(hours=step[1]))
    else:
        collect(config, client, store, clock)


def check_invariant(sim, store, clock) -> None:
    query = sa.select(links.c.id, links.c.url).where(
        links.c.status == LinkStatus.CLAIMED, links.c.expires_at > clock.now()
    )
    with store.read() as connection:
        live = connection.execute(query).all()
    for link_id, url in live:
        check = sim.open_link(url)
        assert check.ok, f"claimed link {link_id} no longer opens: {check.reason}"


def check_nothing_expired_is_left(store, clock) -> None:
    """Liveness: after a gc, an expired list remains only while it holds a live claim."""
    now = clock.now()
    live_claim = sa.exists().where(
        links.c.list_id == lists.c.id,
        links.c.status == LinkStatus.CLAIMED,
        links.c.expires_at > now,
    )
    query = sa.select(lists.c.id).where(
        lists.c.state != ListState.DELETED,
        lists.c.expires_at <= now - GRACE,
        ~live_claim,
    )
    with store.read() as connection:
        assert connection.execute(query).all() == []
