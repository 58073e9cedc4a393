from __future__ import annotations

from datetime import timedelta

import pytest

from linkpool.clock import ManualClock
from linkpool.errors import LeaseHeld, LeaseLost
from linkpool.lease import Lease, new_holder_id
from linkpool.store import Store

TTL = timedelta(minutes=5)


def test_holder_id_names_host_and_process_and_is_unique() -> None:
    first, second = new_holder_id(), new_holder_id()
    assert first != second
    host, pid, token = first.split(":")
    assert host and pid.isdigit() and token


def test_only_one_holder_at_a_time(store: Store, clock: ManualClock) -> None:
    first = Lease(store, "refill:a", clock, ttl=TTL)
    second = Lease(store, "refill:a", clock, ttl=TTL)
    assert first.acquire()
    assert not second.acquire()
    assert first.current_holder() == first.holder


def test_leases_of_different_names_are_independent(store: Store, clock: ManualClock) -> None:
    assert Lease(store, "refill:a", clock, ttl=TTL).acquire()
    assert Lease(store, "refill:b", clock, ttl=TTL).acquire()


def test_a_lapsed_lease_can_be_taken_over(store: Store, clock: ManualClock) -> None:
    first = Lease(store, "leader", clock, ttl=TTL)
    second = Lease(store, "leader", clock, ttl=TTL)
    assert first.acquire()
    clock.advance(TTL + timedelta(seconds=1))
    assert second.acquire()
    assert second.current_holder() == second.holder


def test_renewal_keeps_the_lease_past_its_first_ttl(store: Store, clock: ManualClock) -> None:
    first = Lease(store, "leader", clock, ttl=TTL)
    second = Lease(store, "leader", clock, ttl=TTL)
    first.acquire()
    clock.advance(TTL * 0.8)
    first.renew()
    clock.advance(TTL * 0.8)
    assert not second.acquire()


def test_renew_after_takeover_raises_lease_lost(store: Store, clock: ManualClock) -> None:
    first = Lease(store, "refill:a", clock, ttl=TTL)
    second = Lease(store, "refill:a", clock, ttl=TTL)
    first.acquire()
    clock.advance(TTL * 2)
    second.acquire()
    with pytest.raises(LeaseLost, match="refill:a"):
        first.renew()
    assert not first.held
    assert second.current_holder() == second.holder


def test_release_frees_the_lease_but_never_someone_elses(store: Store, clock: ManualClock) -> None:
    first = Lease(store, "gc", clock, ttl=TTL)
    second = Lease(store, "gc", clock, ttl=TTL)
    first.acquire()
    first.release()
    assert first.current_holder() is None
    assert second.acquire()
    first.release()
    assert second.current_holder() == second.holder


def test_context_manager_raises_lease_held_and_releases_on_exit(
    store: Store, clock: ManualClock
) -> None:
    with Lease(store, "refill:a", clock, ttl=TTL) as lease:
        with pytest.raises(LeaseHeld, match="already running") as caught:
            with Lease(store, "refill:a", clock, ttl=TTL):
                pass
        assert caught.value.exit_code == 0
        assert lease.held
    assert lease.current_holder() is None
