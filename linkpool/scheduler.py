"""``linkpool run``: the daemon that runs refill, gc and sync on their schedules.

Any number of instances may run (on one host or many): only the holder of the ``leader`` lease
runs jobs; the others keep trying to take it, and one does once the leader stops renewing it
(it died, or was stopped). Each job also holds its own lease (``refill:<pool>``, ``gc``,
``sync``), so even a leader that lost its lease mid-job never runs a job twice at once.

``Daemon`` is the logic, driven by an injectable clock so it is tested without waiting:
``tick()`` takes or renews the leader lease, ``run_job(name)`` runs one job if this instance
leads and logs one line with its figures. ``build_scheduler`` puts it on an APScheduler 3
``BlockingScheduler``; ``run_daemon`` adds signal handling: on SIGTERM or SIGINT, refill stops
between two steps, sync between two write-backs and gc between two lists, and every lease is
released.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.blocking import BlockingScheduler

from linkpool.clock import Clock, SystemClock
from linkpool.config import ScheduleSettings, Settings, format_duration
from linkpool.db import check_migrated, create_engine
from linkpool.errors import DatabaseError, LeaseHeld, LeaseLost, LinkPoolError
from linkpool.lease import Lease
from linkpool.qualtrics.client import QualtricsClient
from linkpool.store import Store

logger = logging.getLogger("linkpool.scheduler")

LEADER_LEASE = "leader"
LEADER_TTL = timedelta(seconds=60)
"""A leader that stops renewing is replaced after at most this long."""
JOB_NAMES = ("sync", "refill", "gc")
# What config no longer declares: each job's interval when [schedule] does not name it.
DEFAULT_INTERVALS = {
    "sync": timedelta(seconds=30),
    "refill": timedelta(minutes=5),
    "gc": timedelta(hours=1),
}
LOGGED = ("refill", "gc", "sync")

Job = Callable[[], Any]


@dataclass(frozen=True)
class JobRun:
    """What one scheduled run of a job did."""

    job: str
    ran: bool
    summary: str
    report: Any = None
    failed: bool = False


class Daemon:
    """Leader election and job running, independent of the scheduler that calls it."""

    def __init__(
        self,
        settings: Settings,
        client: QualtricsClient | None,
        store: Store,
        clock: Clock,
        *,
        jobs: Mapping[str, Job] | None = None,
        leader_ttl: timedelta = LEADER_TTL,
        holder: str | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.stop_event = threading.Event()
        self.leader = Lease(store, LEADER_LEASE, clock, ttl=leader_ttl, holder=holder)
        if jobs is None:
            if client is None:
                raise ValueError("the daemon's default jobs need a Qualtrics client")
            jobs = default_jobs(settings, client, store, clock, self.stop_event)
        self.jobs = dict(jobs)
        self._lock = threading.Lock()

    @property
    def leading(self) -> bool:
        return self.leader.held

    def tick(self) -> bool:
        """Take the leader lease if it is free or lapsed, or renew ours; True while leading.

        While the database cannot be reached, no one can tell who leads: False (no job runs),
        one line logged, and the first tick once it is back carries on."""
        try:
            return self._tick()
        except DatabaseError as exc:
            logger.error("no job runs while the database is unavailable: %s", exc)
            return False

    def _tick(self) -> bool:
        with self._lock:
            if self.stop_event.is_set():
                return False
            if self.leader.held:
                try:
                    self.leader.renew()
                except LeaseLost:
                    logger.warning(
                        "lost the leader lease to %s; following",
                        self.leader.current_holder() or "another instance",
                    )
                    return False
                return True
            if self.leader.acquire():
                logger.info("leading as %s", self.leader.holder)
                return True
            return False

    def run_job(self, name: str) -> JobRun:
        """Run one job now if this instance leads; log one line with its figures."""
        if not self.tick():
            return JobRun(name, ran=False, summary="not the leader")
        started = self.clock.monotonic()
        try:
            report = self.jobs[name]()
        except LeaseHeld:
            logger.info("%s: skipped, already running elsewhere", name)
            return JobRun(name, ran=False, summary="already running elsewhere")
        except LinkPoolError as exc:
            logger.error("%s: failed: %s", name, exc)
            return JobRun(name, ran=True, summary=f"failed: {exc}", failed=True)
        except Exception:  # a bug must not kill the daemon: log it, run again next time
            logger.exception("%s: failed unexpectedly", name)
            return JobRun(name, ran=True, summary="failed unexpectedly", failed=True)
        seconds = self.clock.monotonic() - started
        summary, failed = summarize(name, report)
        log = logger.warning if failed else logger.info
        log("%s: %s in %.1fs", name, summary, seconds)
        return JobRun(name, ran=True, summary=summary, report=report, failed=failed)

    def stop(self) -> None:
        """Ask running jobs to stop soon (between two steps, write-backs or lists) and stop
        leading."""
        self.stop_event.set()

    def close(self) -> None:
        """Release the leader lease, so another instance takes over at once."""
        with self._lock:
            if self.leader.held:
                self.leader.release()
                logger.info("released the leader lease")


def default_jobs(
    settings: Settings,
    client: QualtricsClient,
    store: Store,
    clock: Clock,
    stop: threading.Event,
) -> dict[str, Job]:
    from linkpool.gc import collect
    from linkpool.refill import refill
    from linkpool.sync import sync

    return {
        "refill": lambda: refill(settings, client, store, clock, stop=stop),
        "gc": lambda: collect(settings, client, store, clock, stop=stop),
        "sync": lambda: sync(settings, client, store, clock, stop=stop),
    }


def summarize(name: str, report: Any) -> tuple[str, bool]:
    """One line of figures for a job's report, and whether it reported errors."""
    figures = report.to_dict() if hasattr(report, "to_dict") else {}
    errors = list(figures.get("errors") or [])
    if name == "refill":
        pools = figures.get("pools", {}).values()
        errors = [error for pool in pools for error in pool["errors"]]
        parts = [
            f"{len(pools)} pool(s)",
            f"{sum(p['lists_ready'] for p in pools)} list(s) ready",
            f"{sum(p['links_added'] for p in pools)} link(s) added",
            f"shortfall {sum(p['shortfall'] for p in pools)}",
            f"{sum(1 for p in pools if p['skipped'])} skipped",
        ]
    else:
        keys = {
            "gc": ("lists_deleted", "links_voided", "contacts_purged"),
            "sync": ("written", "retrying", "failed", "requeued"),
        }.get(name, ())
        parts = [f"{key.replace('_', ' ')} {figures.get(key, 0)}" for key in keys]
    parts.append(f"{sum(figures.get('api_calls', {}).values())} API call(s)")
    if errors:
        parts.append(f"{len(errors)} error(s): {errors[0]}")
    return ", ".join(parts), bool(errors)


def build_scheduler(
    daemon: Daemon, schedule: ScheduleSettings, executor: ThreadPoolExecutor | None = None
) -> BlockingScheduler:
    """A BlockingScheduler running each job at its interval (first run at once), plus the
    leader lease's renewal at a third of its TTL. Jobs never overlap themselves."""
    executor = executor or ThreadPoolExecutor(max_workers=len(JOB_NAMES) + 1)
    scheduler = BlockingScheduler(
        executors={"default": executor},
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        timezone=UTC,
    )
    start = datetime.now(UTC)
    scheduler.add_job(
        daemon.tick,
        "interval",
        seconds=daemon.leader.ttl.total_seconds() / 3,
        id="leader",
        next_run_time=start,
    )
    intervals = {**DEFAULT_INTERVALS, **schedule}
    for name in JOB_NAMES:
        if name in daemon.jobs:
            scheduler.add_job(
                daemon.run_job,
                "interval",
                args=[name],
                seconds=intervals[name].total_seconds(),
                id=name,
                next_run_time=start,
            )
    return scheduler


def run_daemon(settings: Settings, *, clock: Clock | None = None) -> None:
    """Run in the foreground until SIGTERM or SIGINT; then stop cleanly."""
    clock = clock or SystemClock()
    engine = create_engine(settings.database_url)
    check_migrated(engine)
    client = QualtricsClient.from_settings(settings.require_qualtrics(), clock=clock)
    daemon = Daemon(settings, client, Store(engine), clock)
    executor = ThreadPoolExecutor(max_workers=len(JOB_NAMES) + 1)
    scheduler = build_scheduler(daemon, settings.schedule, executor)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        logger.info("%s received: stopping", signal.Signals(signum).name)
        daemon.stop()
        scheduler.shutdown(wait=False)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    logger.info(
        "linkpool daemon started: refill every %s, gc every %s, sync every %s",
        *(format_duration({**DEFAULT_INTERVALS, **settings.schedule}[job]) for job in LOGGED),
    )
    try:
        scheduler.start()
    finally:
        executor.shutdown(wait=True)  # let running jobs finish
        daemon.close()
        client.close()
        engine.dispose()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        logger.info("linkpool daemon stopped")


__all__ = [
    "Daemon",
    "JobRun",
    "LEADER_LEASE",
    "build_scheduler",
    "default_jobs",
    "run_daemon",
    "summarize",
]
