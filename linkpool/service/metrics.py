"""Prometheus metrics of the service.

Counters and the latency histogram live in each worker. uvicorn's workers share one listening
socket, so a scrape reaches whichever worker accepts it: scraping workers one by one is not
possible, and a per-worker registry would show a different, partial total on each scrape. So
with several workers the service runs prometheus_client's multiprocess mode (``server.py``
points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory before the workers start) and any
worker's ``/metrics`` sums them all. The per-pool gauges are read from the database at
scrape time (``linkpool.metrics.PoolCollector``, shared with the daemon), so they are the same
whichever worker answers.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

from linkpool.metrics import PoolCollector
from linkpool.pool import LinkPool

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST
OUTCOMES = ("ok", "replayed", "exhausted", "conflict", "error")
# Claims take ~0.3-3 ms in process; HTTP adds about as much: resolve the milliseconds.
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5)


class ServiceMetrics:
    """The service's own counters and histogram, and the text of a scrape."""

    def __init__(self, lp: LinkPool) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.multiprocess = bool(os.environ.get(MULTIPROC_ENV))
        registry = None if self.multiprocess else self.registry
        self.claims = Counter(
            "linkpool_claims",
            "Claims answered, by pool and outcome (ok, replayed, exhausted, conflict, error).",
            ["pool", "outcome"],
            registry=registry,
        )
        self.claim_seconds = Histogram(
            "linkpool_claim_duration_seconds",
            "Time to answer a claim request, from its first byte read to its answer.",
            ["pool"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.requests = Counter(
            "linkpool_http_requests",
            "HTTP requests answered, by route and status code.",
            ["route", "status"],
            registry=registry,
        )
        if self.multiprocess:
            multiprocess.MultiProcessCollector(self.registry)  # type: ignore[no-untyped-call]
        self.registry.register(PoolCollector(lp.pools, lp.counts))

    def observe_claim(self, pool: str, outcome: str, seconds: float) -> None:
        self.claims.labels(pool, outcome).inc()
        self.claim_seconds.labels(pool).observe(seconds)

    def scrape(self) -> bytes:
        return generate_latest(self.registry)
