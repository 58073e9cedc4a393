from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from linkpool.clock import ManualClock, Repeating
from linkpool.errors import DatabaseError, LeaseHeld, LeaseInDoubt, LeaseLost
from linkpool.lease import DEFAULT_TTL, Lease, new_holder_id
from linkpool.models import leases, lists
from linkpool.qualtrics.client import QualtricsClient
from linkpool.store import Store
from tests.conftest import START

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


# --- the heartbeat, take(), the holder's checks and fencing (issue 10) ---------------------


class PausableClock(ManualClock):
    """A ManualClock whose repeating callbacks can be held back, as a frozen process's are."""

    def __init__(self) -> None:
        super().__init__(START)
        self.paused = False

    def every(self, seconds: float, callback: Callable[[], None], *, name: str) -> Repeating:
        def unless_paused() -> None:
            if not self.paused:
                callback()

        return super().every(seconds, unless_paused, name=name)


def holding(store: Store, clock: ManualClock, name: str = "refill:a", **kwargs: Any) -> Lease:
    lease = Lease(store, name, clock, **kwargs)
    assert lease.acquire()
    lease.start_heartbeat()
    return lease


def plan_a_list(store: Store, clock: ManualClock) -> int:
    return store.create_list(
        pool="a", survey_id="SV_1", name="linkpool/a/1", size=5, now=clock.now()
    )


def list_count(store: Store) -> int:
    with store.read() as connection:
        return int(connection.execute(sa.select(sa.func.count()).select_from(lists)).scalar_one())


def test_manual_clock_runs_repeating_callbacks_at_their_due_times(clock: ManualClock) -> None:
    seen: list[float] = []
    repeating = clock.every(10, lambda: seen.append(clock.monotonic()), name="t")

    clock.advance(timedelta(seconds=35))
    repeating.cancel()
    clock.advance(timedelta(seconds=35))

    assert seen == [10.0, 20.0, 30.0]
    assert clock.monotonic() == 70.0


def test_the_heartbeat_keeps_a_slow_holder_however_long_it_waits(
    store: Store, clock: ManualClock
) -> None:
    slow = holding(store, clock)

    clock.sleep((DEFAULT_TTL * 20).total_seconds())  # a ten-minute import wait

    slow.check()
    assert not Lease(store, "refill:a", clock).acquire()
    assert slow.current_holder() == slow.holder


def test_take_names_a_live_holder_once_it_is_seen_renewing(
    store: Store, clock: ManualClock
) -> None:
    holding(store, clock, holder="web-1:4242:ab12")
    clock.advance(timedelta(seconds=3))

    with pytest.raises(LeaseHeld) as caught:
        Lease(store, "refill:a", clock).take()

    assert caught.value.exit_code == 0
    assert str(caught.value) == (
        "refill:a is already running: held by host web-1, pid 4242, "
        "since 2026-11-22 09:00:00 UTC, renewed until 09:00:40 UTC"
    )


def test_take_takes_over_from_a_dead_holder_within_one_ttl(
    store: Store, clock: ManualClock
) -> None:
    dead = holding(store, clock)
    dead.stop_heartbeat()  # kill -9: no more renewals
    died = clock.monotonic()

    successor = Lease(store, "refill:a", clock)
    successor.take()

    assert successor.current_holder() == successor.holder
    assert DEFAULT_TTL.total_seconds() < clock.monotonic() - died <= DEFAULT_TTL.total_seconds() + 1


def test_take_reports_a_lease_running_far_ahead_as_in_doubt(
    store: Store, clock: ManualClock
) -> None:
    store.acquire_lease("gc", "old:7:beef", now=clock.now(), ttl=timedelta(minutes=15))

    with pytest.raises(LeaseInDoubt, match="older linkpool") as caught:
        Lease(store, "gc", clock).take()

    assert caught.value.exit_code == 1
    assert "taken over after 2026-11-22 09:15:00 UTC" in str(caught.value)


def test_a_paused_holder_finds_its_lease_lost_on_resume_and_writes_nothing(
    store: Store,
) -> None:
    clock = PausableClock()
    paused = holding(store, clock)
    fenced = store.fenced(paused.fence())
    clock.paused = True  # SIGSTOP: neither the holder nor its heartbeat runs
    clock.advance(DEFAULT_TTL + timedelta(seconds=1))
    successor = Lease(store, "refill:a", clock)
    successor.take()
    clock.paused = False  # SIGCONT

    with pytest.raises(LeaseLost, match="not renewed for 30s"):
        paused.check()
    with pytest.raises(LeaseLost):
        plan_a_list(fenced, clock)
    clock.advance(DEFAULT_TTL / 3)  # its heartbeat beats once, finds it taken, and stops
    assert not paused.held
    assert list_count(store) == 0
    assert successor.current_holder() == successor.holder


def test_the_fence_refuses_a_write_after_a_takeover_the_holder_cannot_see(
    store: Store, clock: ManualClock
) -> None:
    holder = holding(store, clock)
    fenced = store.fenced(holder.fence())
    plan_a_list(fenced, clock)
    # A takeover by a host whose clock runs ahead: the holder's own deadline has not passed.
    with store.write() as connection:
        connection.execute(sa.update(leases).values(holder="ahead:1:0000"))

    with pytest.raises(LeaseLost, match="taken over by ahead:1:0000"):
        fenced.update_list(1, now=clock.now(), state="list_created")

    assert store.get_list(1).state == "planned"
    with pytest.raises(LeaseLost):
        holder.check()  # and it makes no API call either


def test_a_guarded_client_sends_nothing_once_the_lease_is_lost(
    store: Store, clock: ManualClock
) -> None:
    sent: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request.url.path)
        return httpx.Response(200, json={"result": {"userId": "UR_1"}, "meta": {}})

    client = QualtricsClient(
        base_url="https://x.qualtrics.com/API/v3",
        token="t",
        directory_id="POOL_1",
        transport=httpx.MockTransport(answer),
        clock=clock,
    )
    lease = holding(store, clock)
    with client.guarded(lease.check):
        client.whoami()
        lease.stop_heartbeat()
        clock.advance(DEFAULT_TTL)  # frozen past its deadline
        with pytest.raises(LeaseLost):
            client.whoami()

    assert sent == ["/API/v3/whoami"]


def test_a_database_outage_longer_than_the_ttl_stops_the_holder(
    store: Store, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    lease = holding(store, clock)

    def unreachable(*args: Any, **kwargs: Any) -> bool:
        raise DatabaseError("database error: connection refused")

    monkeypatch.setattr(lease.store, "renew_lease", unreachable)
    clock.advance(DEFAULT_TTL * 0.9)  # two beats failed: still within its deadline
    lease.check()
    clock.advance(DEFAULT_TTL * 0.2)

    with pytest.raises(LeaseLost, match="database unreachable"):
        lease.check()


def test_release_stops_the_heartbeat(store: Store, clock: ManualClock) -> None:
    lease = holding(store, clock)
    lease.release()

    clock.advance(DEFAULT_TTL * 2)

    assert lease.current_holder() is None
