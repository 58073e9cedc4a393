"""The daemon's metrics: job runs by outcome, durations, last success, the last report's
figures, Qualtrics calls, leases and pool gauges; and ``linkpool run --metrics-port``."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import httpx
import pytest
from prometheus_client import CollectorRegistry

from linkpool.clock import ManualClock
from linkpool.config import PoolSettings, QualtricsSettings, Settings
from linkpool.errors import ConfigError, LeaseHeld, QualtricsError
from linkpool.job import JobContext, JobReport
from linkpool.metrics import JOB_OUTCOMES, DaemonMetrics
from linkpool.scheduler import LEADER_LEASE, Daemon, serve_metrics
from linkpool.simulator import Faults, Simulator
from linkpool.store import Store
from linkpool.sync import SyncReport
from tests.acceptance.harness import free_port
from tests.conftest import SURVEY_ID

TTL = timedelta(seconds=60)
POOLS = {"nps": PoolSettings(name="nps", survey_id=SURVEY_ID)}


@dataclass(frozen=True)
class FakeJob:
    name: str
    work: Callable[[ManualClock], JobReport]
    lock: str = "fake"
    default_interval: timedelta = timedelta(minutes=1)

    def run(self, context: JobContext, stop: threading.Event) -> JobReport:
        assert isinstance(context.clock, ManualClock)
        return self.work(context.clock)


def took(seconds: float, report: JobReport) -> Callable[[ManualClock], JobReport]:
    def work(clock: ManualClock) -> JobReport:
        clock.advance(timedelta(seconds=seconds))
        return report

    return work


def raises(error: Exception) -> Callable[[ManualClock], JobReport]:
    def work(clock: ManualClock) -> JobReport:
        raise error

    return work


def metered(
    store: Store, clock: ManualClock, jobs: list[FakeJob], holder: str = "a"
) -> tuple[Daemon, CollectorRegistry]:
    settings = Settings(pools=POOLS)
    daemon = Daemon(settings, None, store, clock, jobs=jobs, leader_ttl=TTL, holder=holder)
    metrics = DaemonMetrics(
        store=store,
        clock=clock,
        pools=POOLS,
        counts=lambda pool: store.counts(pool, clock.now(), POOLS[pool].min_remaining),
        client=None,
        leading=lambda: daemon.leading,
    )
    daemon.observer = metrics.observe_job
    return daemon, metrics.registry


def runs(registry: CollectorRegistry, job: str, outcome: str) -> float:
    return registry.get_sample_value("linkpool_job_runs_total", {"job": job, "outcome": outcome})


def test_each_run_is_counted_by_outcome_and_timed(store: Store, clock: ManualClock) -> None:
    clean = SyncReport(written=3, api_calls=Counter({"PUT x": 3}))
    jobs = [
        FakeJob("sync", took(2.0, clean)),
        FakeJob("gc", took(1.0, SyncReport(errors=["list 3: Qualtrics said no"]))),
        FakeJob("refill", raises(QualtricsError("Qualtrics is down"))),
    ]
    daemon, registry = metered(store, clock, jobs)

    for name in ("sync", "sync", "gc", "refill"):
        daemon.run_job(name)

    assert runs(registry, "sync", "ok") == 2
    assert runs(registry, "gc", "errors") == 1
    assert runs(registry, "refill", "failed") == 1
    seconds = {"job": "sync"}
    assert registry.get_sample_value("linkpool_job_duration_seconds_count", seconds) == 2
    assert registry.get_sample_value("linkpool_job_duration_seconds_sum", seconds) == 4.0
    figures = {"job": "sync", "figure": "written"}
    assert registry.get_sample_value("linkpool_job_last_report", figures) == 3
    api_calls = {"job": "sync", "figure": "api_calls"}
    assert registry.get_sample_value("linkpool_job_last_report", api_calls) == 3


def test_last_success_is_the_time_of_the_last_clean_run(store: Store, clock: ManualClock) -> None:
    outcomes = iter([SyncReport(), SyncReport(errors=["boom"])])
    daemon, registry = metered(store, clock, [FakeJob("sync", lambda _clock: next(outcomes))])

    daemon.run_job("sync")
    succeeded_at = clock.now().timestamp()
    clock.advance(timedelta(minutes=5))
    daemon.run_job("sync")

    last = registry.get_sample_value("linkpool_job_last_success_timestamp_seconds", {"job": "sync"})
    assert last == succeeded_at
    never = registry.get_sample_value("linkpool_job_last_success_timestamp_seconds", {"job": "gc"})
    assert never is None  # a job that never succeeded has no sample: alert on its absence too


def test_skipped_runs_are_counted_for_followers_and_held_leases(
    store: Store, clock: ManualClock
) -> None:
    leader, _ = metered(store, clock, [FakeJob("sync", took(0, SyncReport()))], holder="a")
    follower, registry = metered(
        store, clock, [FakeJob("sync", raises(LeaseHeld("sync is running")))], holder="b"
    )
    assert leader.tick()

    follower.run_job("sync")
    clock.advance(TTL * 2)  # the leader went silent: b leads, but the job's lease is held
    follower.run_job("sync")

    assert runs(registry, "sync", "skipped") == 2
    assert set(JOB_OUTCOMES) == {"ok", "errors", "failed", "skipped"}


def test_lease_holders_and_leadership_are_read_at_scrape_time(
    store: Store, clock: ManualClock
) -> None:
    daemon, registry = metered(store, clock, [], holder="host-1:42")
    assert registry.get_sample_value("linkpool_daemon_leading") == 0

    daemon.tick()

    assert registry.get_sample_value("linkpool_daemon_leading") == 1
    holder = {"lease": LEADER_LEASE, "holder": "host-1:42"}
    assert registry.get_sample_value("linkpool_lease_holder", holder) == 1
    daemon.leader.stop_heartbeat()  # the daemon died: its lease lapses
    clock.advance(TTL * 2)
    assert registry.get_sample_value("linkpool_lease_holder", holder) is None


def test_pool_gauges_come_from_the_counts(store: Store, clock: ManualClock, seed) -> None:
    seed(store, "nps", 3, now=clock.now(), expires_at=clock.now() + timedelta(days=30))
    _, registry = metered(store, clock, [])

    assert registry.get_sample_value("linkpool_pool_claimable", {"pool": "nps"}) == 3
    assert registry.get_sample_value("linkpool_database_up") == 1


def test_qualtrics_calls_by_endpoint_and_status_429s_and_retries(
    store: Store, clock: ManualClock
) -> None:
    sim = Simulator(clock=clock)
    sim.faults = Faults(rate_limit_per_minute=1)  # the second call in a minute gets a 429
    settings = Settings(
        qualtrics=QualtricsSettings(base_url=sim.base_url, directory_id=sim.directory_id),
        pools=POOLS,
    )
    with sim.client() as client:
        daemon = Daemon(settings, client, store, clock, jobs=[], leader_ttl=TTL)
        port = free_port()
        stop_metrics = serve_metrics(daemon, client, "127.0.0.1", port)
        try:
            client.whoami()
            client.whoami()  # 429, waits out Retry-After on the manual clock, then 200
            text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        finally:
            stop_metrics()
    endpoint = next(iter(client.calls))
    assert daemon.observer is not None
    assert f'linkpool_qualtrics_calls_total{{endpoint="{endpoint}",status="200"}} 2.0' in text
    assert f'linkpool_qualtrics_calls_total{{endpoint="{endpoint}",status="429"}} 1.0' in text
    assert f'linkpool_qualtrics_rate_limited_total{{endpoint="{endpoint}"}} 1.0' in text
    assert f'linkpool_qualtrics_retries_total{{endpoint="{endpoint}"}} 1.0' in text
    assert 'linkpool_pool_claimable{pool="nps"} 0.0' in text
    assert sim.token not in text


def test_a_metrics_port_in_use_is_one_clear_error(store: Store, clock: ManualClock) -> None:
    sim = Simulator(clock=clock)
    settings = Settings(
        qualtrics=QualtricsSettings(base_url=sim.base_url, directory_id=sim.directory_id)
    )
    with sim.client() as client:
        daemon = Daemon(settings, client, store, clock, jobs=[], leader_ttl=TTL)
        port = free_port()
        stop_first = serve_metrics(daemon, client, "127.0.0.1", port)
        try:
            with pytest.raises(ConfigError, match=f"cannot serve metrics on 127.0.0.1:{port}"):
                serve_metrics(daemon, client, "127.0.0.1", port)
        finally:
            stop_first()
