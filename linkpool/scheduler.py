"""``linkpool run``: the daemon that runs refill, gc and sync on their schedules.

Any number of instances may run (on one host or many): only the holder of the ``leader`` lease
runs jobs; the others keep trying to take it, and one does once the leader stops renewing it
(it died, froze, or was stopped). The leader renews it with a heartbeat (``linkpool.lease``)
besides each ``tick()``, so a leader busy with long jobs keeps it. Each job also holds its own lease (``refill:<pool>``, ``gc``,
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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import FrameType

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.blocking import BlockingScheduler

from linkpool.clock import Clock, SystemClock
from linkpool.config import Settings, format_duration
from linkpool.db import DatabaseFileWatch, check_migrated, create_engine
from linkpool.errors import (
    AuthError,
    ConfigError,
    DatabaseError,
    LeaseHeld,
    LeaseInDoubt,
    LeaseLost,
    LinkPoolError,
    NotFound,
    QualtricsError,
)
from linkpool.job import Job, JobContext, JobReport
from linkpool.jobs import JOBS, intervals
from linkpool.lease import DEFAULT_TTL, Lease, describe_holder
from linkpool.qualtrics.client import QualtricsClient
from linkpool.store import Store

logger = logging.getLogger("linkpool.scheduler")

LEADER_LEASE = "leader"
LEADER_TTL = DEFAULT_TTL
"""A leader that stops renewing is replaced this long after its last renewal, plus one tick
(a third of it) at most."""


@dataclass(frozen=True)
class JobRun:
    """What one scheduled run of a job did."""

    job: str
    ran: bool
    summary: str
    report: JobReport | None = None
    failed: bool = False

    @property
    def outcome(self) -> str:
        """One of ``linkpool.metrics.JOB_OUTCOMES``: ok, errors, failed, skipped."""
        if not self.ran:
            return "skipped"
        if self.failed:
            return "failed" if self.report is None else "errors"
        return "ok"


JobObserver = Callable[[str, str, float, JobReport | None], None]
"""Told of every scheduled run: the job, its outcome, its seconds and its report (if any)."""


class Daemon:
    """Leader election and job running, independent of the scheduler that calls it."""

    def __init__(
        self,
        settings: Settings,
        client: QualtricsClient | None,
        store: Store,
        clock: Clock,
        *,
        jobs: Iterable[Job] = JOBS,
        leader_ttl: timedelta = LEADER_TTL,
        holder: str | None = None,
        observer: JobObserver | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.context = JobContext(settings=settings, client=client, store=store, clock=clock)
        self.stop_event = threading.Event()
        self.leader = Lease(store, LEADER_LEASE, clock, ttl=leader_ttl, holder=holder)
        self.jobs = {job.name: job for job in jobs}
        self.observer = observer
        self._following: str | None = None  # the leader last logged, to log each one once
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
        except LeaseInDoubt as exc:
            logger.error("not leading: %s", exc)
            return False

    def _tick(self) -> bool:
        with self._lock:
            if self.stop_event.is_set():
                return False
            if self.leader.held:
                try:
                    self.leader.renew()
                except LeaseLost:
                    self.leader.stop_heartbeat()
                    logger.warning(
                        "lost the leader lease to %s; following",
                        self.leader.current_holder() or "another instance",
                    )
                    return False
                return True
            if self.leader.acquire():
                self.leader.start_heartbeat()
                self._following = None
                logger.info("leading as %s", self.leader.holder)
                return True
            self._log_leader()
            return False

    def _log_leader(self) -> None:
        """Name the instance that leads, once each time another one does."""
        record = self.leader.record()
        if record is not None and record.holder != self._following:
            self._following = record.holder
            logger.info("following the leader: %s", describe_holder(record))

    def run_job(self, name: str) -> JobRun:
        """Run one job now if this instance leads; log one line with its figures, and tell
        the observer (the metrics), if there is one."""
        started = self.clock.monotonic()
        run = self._run_job(name)
        if self.observer is not None:
            self.observer(name, run.outcome, self.clock.monotonic() - started, run.report)
        return run

    def _run_job(self, name: str) -> JobRun:
        if not self.tick():
            return JobRun(name, ran=False, summary="not the leader")
        started = self.clock.monotonic()
        try:
            report = self.jobs[name].run(self.context, self.stop_event)
        except LeaseHeld as exc:
            logger.info("%s: skipped, already running elsewhere: %s", name, exc)
            return JobRun(name, ran=False, summary=f"already running elsewhere: {exc}")
        except LinkPoolError as exc:
            logger.error("%s: failed: %s", name, exc)
            return JobRun(name, ran=True, summary=f"failed: {exc}", failed=True)
        except Exception:  # a bug must not kill the daemon: log it, run again next time
            logger.exception("%s: failed unexpectedly", name)
            return JobRun(name, ran=True, summary="failed unexpectedly", failed=True)
        seconds = self.clock.monotonic() - started
        summary, failed = summarize(report)
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


def summarize(report: JobReport) -> tuple[str, bool]:
    """One line of figures for a job's report, and whether it reported errors."""
    return report.summary(), report.has_errors


def build_scheduler(
    daemon: Daemon,
    every: Mapping[str, timedelta],
    executor: ThreadPoolExecutor | None = None,
) -> BlockingScheduler:
    """A BlockingScheduler running each of the daemon's jobs at its interval in ``every``
    (first run at once), plus the leader lease's renewal at a third of its TTL. Jobs never
    overlap themselves."""
    executor = executor or ThreadPoolExecutor(max_workers=len(daemon.jobs) + 1)
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
    for name in daemon.jobs:
        scheduler.add_job(
            daemon.run_job,
            "interval",
            args=[name],
            seconds=every[name].total_seconds(),
            id=name,
            next_run_time=start,
        )
    return scheduler


FILE_CHECK_SECONDS = 1.0
"""How often the daemon checks that its SQLite file was not deleted or replaced (one stat)."""


def check_qualtrics_at_start(client: QualtricsClient) -> None:
    """Say at start whether Qualtrics accepts us. A refused token or a wrong directory is a
    setting to fix: raised, the daemon does not start. Qualtrics being down or slow is not:
    logged, and the jobs retry on their schedule."""
    try:
        access = client.check_access()
    except (AuthError, NotFound):
        raise
    except QualtricsError as exc:
        logger.error("Qualtrics is not answering at start; jobs will retry: %s", exc)
        return
    logger.info(
        "Qualtrics access checked: user %s, directory %s%s",
        access.user_id,
        client.directory_id,
        f" (notice: {access.notice})" if access.notice else "",
    )


def run_daemon(
    settings: Settings,
    *,
    clock: Clock | None = None,
    metrics_port: int | None = None,
    metrics_host: str = "127.0.0.1",
) -> None:
    """Run in the foreground until SIGTERM or SIGINT; then stop cleanly. With
    ``metrics_port``, serve Prometheus metrics there (``linkpool.metrics``)."""
    clock = clock or SystemClock()
    every = intervals(settings)  # an unknown [schedule] key fails before anything starts
    engine = create_engine(settings.database_url)
    check_migrated(engine)
    client = QualtricsClient.from_settings(settings.require_qualtrics(), clock=clock)
    check_qualtrics_at_start(client)
    daemon = Daemon(settings, client, Store(engine), clock)
    client.stop_when(daemon.stop_event)
    stop_metrics = None
    if metrics_port is not None:
        stop_metrics = serve_metrics(daemon, client, metrics_host, metrics_port)
    executor = ThreadPoolExecutor(max_workers=len(daemon.jobs) + 2)
    scheduler = build_scheduler(daemon, every, executor)
    stopped_by: list[LinkPoolError] = []

    def stop_on(error: LinkPoolError) -> None:
        if daemon.stop_event.is_set():
            return  # stopping already (a signal)
        logger.error("%s", error)
        stopped_by.append(error)
        daemon.stop()
        scheduler.shutdown(wait=False)

    watch_database_file(scheduler, DatabaseFileWatch(engine), stop_on)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if daemon.stop_event.is_set():
            logger.info("%s received: already stopping (running jobs end after their step)", name)
            return
        logger.info("%s received: stopping", name)
        daemon.stop()
        scheduler.shutdown(wait=False)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    logger.info(
        "linkpool daemon started: %s",
        ", ".join(f"{name} every {format_duration(every[name])}" for name in daemon.jobs),
    )
    try:
        scheduler.start()
    finally:
        executor.shutdown(wait=True)  # let running jobs finish
        if stop_metrics is not None:
            stop_metrics()
        if not stopped_by:  # the leader lease is in the lost file: touching it would make a new one
            daemon.close()
        client.close()
        engine.dispose()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        logger.info("linkpool daemon stopped")
    if stopped_by:
        raise stopped_by[0]


def watch_database_file(
    scheduler: BlockingScheduler,
    watch: DatabaseFileWatch,
    stop_on: Callable[[LinkPoolError], None],
) -> None:
    """Every second, check that the SQLite file is still the one opened; else stop."""
    if watch.path is None:
        return

    def check() -> None:
        try:
            watch.check()
        except DatabaseError as exc:
            stop_on(exc)

    scheduler.add_job(check, "interval", seconds=FILE_CHECK_SECONDS, id="database-file")


def serve_metrics(
    daemon: Daemon, client: QualtricsClient, host: str, port: int
) -> Callable[[], None]:
    """Start the daemon's metrics endpoint and make the daemon report its runs to it; returns
    what stops the endpoint."""
    from linkpool.metrics import DaemonMetrics  # prometheus_client only when asked for

    store, settings = daemon.context.store, daemon.settings
    min_remaining = {name: pool.min_remaining for name, pool in settings.pools.items()}
    metrics = DaemonMetrics(
        store=store,
        clock=daemon.clock,
        pools=settings.pools,
        counts=lambda pool: store.counts(pool, daemon.clock.now(), min_remaining[pool]),
        client=client,
        leading=lambda: daemon.leading,
    )
    daemon.observer = metrics.observe_job
    try:
        server = metrics.serve(port, host)
    except OSError as exc:
        raise ConfigError(f"cannot serve metrics on {host}:{port}: {exc.strerror}") from None
    logger.info("metrics on http://%s:%d/metrics", host, port)
    return server.shutdown


__all__ = [
    "Daemon",
    "JobRun",
    "LEADER_LEASE",
    "build_scheduler",
    "run_daemon",
    "summarize",
]
