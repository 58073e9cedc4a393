"""Fencing on PostgreSQL: the lease row is read FOR SHARE, so a takeover and a holder's write
serialise; a holder frozen in the middle of a write delays a takeover by one second, not forever.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from linkpool.clock import ManualClock
from linkpool.errors import LeaseInDoubt, LeaseLost
from linkpool.lease import DEFAULT_TTL, Lease
from linkpool.models import leases, lists
from linkpool.store import Store
from tests.conftest import START


def plan_a_list(store: Store, clock: ManualClock) -> int:
    return store.create_list(
        pool="a", survey_id="SV_1", name="linkpool/a/1", size=5, now=clock.now()
    )


def test_a_fenced_write_after_a_takeover_writes_nothing(pg_store: Store) -> None:
    clock = ManualClock(START)
    holder = Lease(pg_store, "refill:a", clock)
    assert holder.acquire()
    fenced = pg_store.fenced(holder.fence())
    with pg_store.write() as connection:  # taken over by a host whose clock runs ahead
        connection.execute(sa.update(leases).values(holder="ahead:1:0000"))

    with pytest.raises(LeaseLost, match="taken over by ahead:1:0000"):
        plan_a_list(fenced, clock)

    with pg_store.read() as connection:
        assert connection.execute(sa.select(sa.func.count()).select_from(lists)).scalar() == 0


def test_a_holder_frozen_mid_write_delays_a_takeover_by_a_second_not_forever(
    pg_store: Store,
) -> None:
    clock = ManualClock(START)
    frozen = Lease(pg_store, "refill:a", clock)
    assert frozen.acquire()
    clock.advance(DEFAULT_TTL + timedelta(seconds=1))  # its lease lapsed while it was frozen …
    with pg_store.engine.connect() as connection, connection.begin():
        # … inside a fenced write: the lease row stays locked FOR SHARE until it resumes
        query = sa.select(leases.c.holder).where(leases.c.name == "refill:a")
        connection.execute(query.with_for_update(read=True))

        with pytest.raises(LeaseInDoubt, match="frozen in the middle of a write") as caught:
            Lease(pg_store, "refill:a", clock).take()
        assert caught.value.exit_code == 1

    successor = Lease(pg_store, "refill:a", clock)  # the frozen write ended (resumed, killed)
    successor.take()
    assert successor.current_holder() == successor.holder
