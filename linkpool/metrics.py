"""Prometheus metrics of the daemon (``linkpool run --metrics-port``), and the per-pool gauges
the daemon and the service (``linkpool.service.metrics``) both export.

What changes as jobs run is recorded as it happens (``DaemonMetrics.observe_job``, called by
the daemon after every scheduled run). What already has a source of truth is read from it at
each scrape, by collectors: the Qualtrics client's tallies, the leases table, the pools' counts.
Every metric name is documented in docs/service.md#metrics.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from linkpool.clock import Clock
from linkpool.config import PoolSettings
from linkpool.errors import LinkPoolError
from linkpool.job import JobReport
from linkpool.qualtrics.client import QualtricsClient
from linkpool.store import PoolCounts, Store

JOB_OUTCOMES = ("ok", "errors", "failed", "skipped")
"""ok: ran cleanly; errors: ran, its report has errors; failed: raised; skipped: not the
leader, or the job's lease was held elsewhere."""
# Jobs take from a fraction of a second (sync with nothing due) to many minutes (a refill).
JOB_BUCKETS = (0.1, 0.5, 1, 5, 15, 60, 300, 900, 1800, 3600)

POOL_GAUGES = {
    "claimable": "Available links with at least min_remaining left: what a claim can get.",
    "available": "Available links not yet expired (claimable and too old).",
    "too_old": "Available links with less than min_remaining left: never handed out.",
    "claimed": "Links claimed, all time.",
    "claimed_24h": "Links claimed in the last 24 hours.",
    "writeback_pending": "Claims whose recipient write-back to Qualtrics is still due.",
    "writeback_failed": "Claims whose write-back was given up (see `linkpool sync --retry-failed`).",
}


class PoolCollector(Collector):
    """``linkpool_pool_*{pool}`` gauges and ``linkpool_database_up``, read from the pools'
    counts at each scrape."""

    def __init__(
        self, pools: Mapping[str, PoolSettings], counts: Callable[[str], PoolCounts]
    ) -> None:
        self.pools = pools
        self.counts = counts

    def describe(self) -> Iterator[Metric]:
        """Nothing up front: describing would cost a database read at registration."""
        return iter(())

    def collect(self) -> Iterator[Metric]:
        families = {
            name: GaugeMetricFamily(f"linkpool_pool_{name}", help_text, labels=["pool"])
            for name, help_text in POOL_GAUGES.items()
        }
        lists = GaugeMetricFamily(
            "linkpool_pool_live_lists", "Mailing lists of the pool not deleted.", labels=["pool"]
        )
        up = GaugeMetricFamily("linkpool_database_up", "1 if the last scrape read the database.")
        try:
            for pool in self.pools:
                counts = self.counts(pool)
                for name, family in families.items():
                    family.add_metric([pool], getattr(counts, name))
                lists.add_metric([pool], len(counts.lists))
        except LinkPoolError:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield from families.values()
        yield lists
        yield up


class QualtricsCollector(Collector):
    """The client's own tallies, as counters: calls by endpoint and answer, retries."""

    def __init__(self, client: QualtricsClient) -> None:
        self.client = client

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        calls = CounterMetricFamily(
            "linkpool_qualtrics_calls",
            "Qualtrics API attempts (retries included), by templated endpoint and answer "
            "(the HTTP status, or the transport error's name).",
            labels=["endpoint", "status"],
        )
        limited = CounterMetricFamily(
            "linkpool_qualtrics_rate_limited",
            "Qualtrics API attempts answered 429 Too Many Requests, by endpoint.",
            labels=["endpoint"],
        )
        retries = CounterMetricFamily(
            "linkpool_qualtrics_retries",
            "Qualtrics API attempts that were retries of an earlier attempt, by endpoint.",
            labels=["endpoint"],
        )
        for (endpoint, status), count in sorted(self.client.outcomes.items()):
            calls.add_metric([endpoint, status], count)
            if status == "429":
                limited.add_metric([endpoint], count)
        for endpoint, count in sorted(self.client.retries.items()):
            retries.add_metric([endpoint], count)
        yield from (calls, limited, retries)


class LeaseCollector(Collector):
    """``linkpool_lease_holder{lease, holder}``: 1 for each lease held now, and whether this
    instance leads."""

    def __init__(self, store: Store, clock: Clock, leading: Callable[[], bool]) -> None:
        self.store = store
        self.clock = clock
        self.leading = leading

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        leader = GaugeMetricFamily(
            "linkpool_daemon_leading", "1 while this daemon holds the leader lease."
        )
        leader.add_metric([], 1 if self.leading() else 0)
        yield leader
        holders = GaugeMetricFamily(
            "linkpool_lease_holder",
            "1 for each lease held now (leader, refill:<pool>, gc, sync…) by its holder.",
            labels=["lease", "holder"],
        )
        try:
            held = self.store.live_leases(now=self.clock.now())
        except LinkPoolError:
            return  # linkpool_database_up says why
        for lease, holder in held.items():
            holders.add_metric([lease, holder], 1)
        yield holders


class DaemonMetrics:
    """The daemon's registry: job runs as they end, and the collectors above."""

    def __init__(
        self,
        *,
        store: Store,
        clock: Clock,
        pools: Mapping[str, PoolSettings],
        counts: Callable[[str], PoolCounts],
        client: QualtricsClient | None,
        leading: Callable[[], bool],
    ) -> None:
        self.clock = clock
        self.registry = CollectorRegistry()
        self.runs = Counter(
            "linkpool_job_runs",
            "Scheduled job runs, by job and outcome (ok, errors, failed, skipped).",
            ["job", "outcome"],
            registry=self.registry,
        )
        self.seconds = Histogram(
            "linkpool_job_duration_seconds",
            "How long job runs took (runs skipped included), by job.",
            ["job"],
            buckets=JOB_BUCKETS,
            registry=self.registry,
        )
        self.last_success = Gauge(
            "linkpool_job_last_success_timestamp_seconds",
            "When each job last ran without errors (Unix time).",
            ["job"],
            registry=self.registry,
        )
        self.figures = Gauge(
            "linkpool_job_last_report",
            "The figures of each job's last report (its counters(): links_added, written…).",
            ["job", "figure"],
            registry=self.registry,
        )
        self.registry.register(PoolCollector(pools, counts))
        self.registry.register(LeaseCollector(store, clock, leading))
        if client is not None:
            self.registry.register(QualtricsCollector(client))

    def observe_job(self, job: str, outcome: str, seconds: float, report: JobReport | None) -> None:
        self.runs.labels(job, outcome).inc()
        self.seconds.labels(job).observe(seconds)
        if outcome == "ok":
            self.last_success.labels(job).set(self.clock.now().timestamp())
        if report is not None:
            for figure, value in report.counters().items():
                self.figures.labels(job, figure).set(value)

    def serve(self, port: int, host: str) -> WSGIServer:
        """Serve ``/metrics`` (any path, in fact) on a daemon thread; returns the server."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        return server


__all__ = ["DaemonMetrics", "PoolCollector"]
