"""The daemon's logic, driven by a ManualClock: leadership, handover, job runs and their logs."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest

from linkpool.clock import ManualClock
from linkpool.config import PoolSettings, QualtricsSettings, Settings
from linkpool.errors import LeaseHeld, QualtricsError
from linkpool.job import JobContext, JobReport
from linkpool.jobs import JOBS
from linkpool.refill import PoolReport, RefillReport
from linkpool.scheduler import LEADER_LEASE, Daemon, build_scheduler, summarize
from linkpool.simulator import Simulator
from linkpool.store import Store
from linkpool.sync import SyncReport

TTL = timedelta(seconds=60)
SETTINGS = Settings()


@dataclass(frozen=True)
class FakeJob:
    """A job that runs ``work`` (a test double of the Job shape)."""

    name: str
    work: Callable[[], JobReport | None]
    lock: str = "fake"
    default_interval: timedelta = timedelta(minutes=1)

    def run(self, context: JobContext, stop: threading.Event) -> JobReport:
        return self.work() or SyncReport()


def daemon(store: Store, clock: ManualClock, runs: list[str], name: str = "a") -> Daemon:
    def job(job_name: str) -> FakeJob:
        return FakeJob(job_name, lambda: runs.append(f"{name}:{job_name}"))  # type: ignore[func-returns-value]

    jobs = [job(job_name) for job_name in ("refill", "gc", "sync")]
    return Daemon(SETTINGS, None, store, clock, jobs=jobs, leader_ttl=TTL, holder=name)


def test_only_the_leader_runs_jobs(store: Store, clock: ManualClock) -> None:
    runs: list[str] = []
    first, second = daemon(store, clock, runs, "a"), daemon(store, clock, runs, "b")

    assert first.run_job("refill").ran
    outcome = second.run_job("refill")

    assert not outcome.ran and outcome.summary == "not the leader"
    assert runs == ["a:refill"]
    assert store.lease_holder(LEADER_LEASE, now=clock.now()) == "a"


def test_a_follower_takes_over_when_the_leader_stops_renewing(
    store: Store, clock: ManualClock
) -> None:
    runs: list[str] = []
    first, second = daemon(store, clock, runs, "a"), daemon(store, clock, runs, "b")
    assert first.tick()

    clock.advance(TTL / 2)
    assert first.tick() and not second.tick()  # renewed: still leading
    first.leader.stop_heartbeat()  # the leader's process froze: no tick, no heartbeat
    clock.advance(TTL + timedelta(seconds=1))

    assert second.run_job("gc").ran
    assert not first.tick()
    assert not first.leading
    assert not first.run_job("gc").ran
    assert runs == ["b:gc"]


def test_the_heartbeat_keeps_a_leader_that_does_not_tick(store: Store, clock: ManualClock) -> None:
    runs: list[str] = []
    first, second = daemon(store, clock, runs, "a"), daemon(store, clock, runs, "b")
    assert first.tick()

    clock.advance(TTL * 5)  # a long job: the scheduler's tick is late, the heartbeat is not

    assert not second.tick()
    assert first.run_job("gc").ran
    assert runs == ["a:gc"]


def test_a_follower_logs_the_leader_it_follows_once(
    store: Store, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    first, second = daemon(store, clock, [], "web-1:4242:ab12"), daemon(store, clock, [], "b")
    first.tick()

    with caplog.at_level(logging.INFO, logger="linkpool.scheduler"):
        assert not second.tick()
        assert not second.tick()

    following = [r.getMessage() for r in caplog.records if "following" in r.getMessage()]
    assert len(following) == 1
    assert "host web-1, pid 4242, since 2026-11-22 09:00:00 UTC" in following[0]


def test_closing_hands_leadership_over_at_once(store: Store, clock: ManualClock) -> None:
    runs: list[str] = []
    first, second = daemon(store, clock, runs, "a"), daemon(store, clock, runs, "b")
    first.tick()

    first.close()

    assert second.tick()
    assert store.lease_holder(LEADER_LEASE, now=clock.now()) == "b"


def test_a_stopped_daemon_runs_nothing(store: Store, clock: ManualClock) -> None:
    runs: list[str] = []
    instance = daemon(store, clock, runs)

    instance.stop()

    assert not instance.run_job("sync").ran
    assert runs == []


def test_job_failures_are_logged_and_do_not_escape(
    store: Store, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    def failing() -> None:
        raise QualtricsError("Qualtrics is down")

    def buggy() -> None:
        raise ZeroDivisionError

    def busy() -> None:
        raise LeaseHeld("gc is already running")

    instance = Daemon(
        SETTINGS,
        None,
        store,
        clock,
        jobs=[FakeJob("refill", failing), FakeJob("gc", buggy), FakeJob("sync", busy)],
        leader_ttl=TTL,
    )
    caplog.set_level(logging.INFO, logger="linkpool.scheduler")

    assert instance.run_job("refill").failed
    assert instance.run_job("gc").failed
    skipped = instance.run_job("sync")

    assert not skipped.ran and not skipped.failed
    messages = [record.getMessage() for record in caplog.records]
    assert any("refill: failed: Qualtrics is down" in m for m in messages)
    assert any("gc: failed unexpectedly" in m for m in messages)
    assert any("sync: skipped, already running elsewhere" in m for m in messages)


def test_each_run_logs_one_line_with_its_figures(
    store: Store, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    def report() -> SyncReport:
        return SyncReport(written=3, retrying=1, failed=0, api_calls=Counter({"PUT x": 4}))

    instance = Daemon(SETTINGS, None, store, clock, jobs=[FakeJob("sync", report)], leader_ttl=TTL)
    caplog.set_level(logging.INFO, logger="linkpool.scheduler")

    outcome = instance.run_job("sync")

    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("sync:")]
    assert lines == [f"sync: {outcome.summary} in 0.0s"]
    assert "written 3" in outcome.summary and "4 API call(s)" in outcome.summary


def test_refill_summary_adds_up_the_pools() -> None:
    report = RefillReport(
        [
            PoolReport("a", lists_ready=2, links_added=8, shortfall=1),
            PoolReport("b", skipped="already running"),
            PoolReport("c", errors=["list 3: Qualtrics said no"]),
        ]
    )

    summary, failed = summarize(report)

    assert failed
    assert summary.startswith("3 pool(s), 2 list(s) ready, 8 link(s) added, shortfall 1")
    assert "1 skipped" in summary and "1 error(s): list 3: Qualtrics said no" in summary


def test_the_scheduler_runs_every_job_at_its_interval(store: Store, clock: ManualClock) -> None:
    schedule = {
        "refill": timedelta(minutes=5),
        "gc": timedelta(hours=1),
        "sync": timedelta(seconds=30),
    }
    instance = daemon(store, clock, [])

    scheduler = build_scheduler(instance, schedule)

    jobs = {job.id: job.trigger.interval for job in scheduler.get_jobs()}
    assert jobs == {
        "leader": TTL / 3,
        "refill": timedelta(minutes=5),
        "gc": timedelta(hours=1),
        "sync": timedelta(seconds=30),
    }


def test_the_daemon_runs_the_real_refill(store: Store, clock: ManualClock) -> None:
    sim = Simulator(clock=clock)
    pool = PoolSettings(
        name="nps", survey_id="SV_SimSurvey0001", target_available=4, low_water=2, list_size=4
    )
    settings = Settings(
        qualtrics=QualtricsSettings(base_url=sim.base_url, directory_id=sim.directory_id),
        pools={"nps": pool},
    )
    with sim.client() as client:
        instance = Daemon(settings, client, store, clock, leader_ttl=TTL)
        outcome = instance.run_job("refill")

    assert outcome.ran and not outcome.failed
    assert "4 link(s) added" in outcome.summary
    assert store.counts("nps", clock.now(), pool.min_remaining).claimable == 4


def test_every_default_job_gets_the_daemons_stop_request(
    store: Store, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    stops: dict[str, threading.Event | None] = {}
    for target in ("linkpool.refill.refill", "linkpool.gc.collect", "linkpool.sync.sync"):
        name = target.rsplit(".", 1)[1]

        def job(*args: Any, stop: threading.Event | None = None, name: str = name) -> None:
            stops[name] = stop

        monkeypatch.setattr(target, job)
    stop = threading.Event()

    with Simulator(clock=clock).client() as client:
        context = JobContext(settings=SETTINGS, client=client, store=store, clock=clock)
        for job in JOBS:
            job.run(context, stop)

    assert stops == {"refill": stop, "collect": stop, "sync": stop}
