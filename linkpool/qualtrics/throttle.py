"""Client-side throttling: a token bucket for the rate, a semaphore for requests in flight.

One ``Throttle`` is shared by every thread using a ``QualtricsClient``, so the limits hold for the
client as a whole, not per thread.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from linkpool.clock import Clock


class TokenBucket:
    """At most ``requests_per_minute`` requests a minute, on the injected clock.

    The bucket holds up to one minute's budget and refills continuously at
    ``requests_per_minute / 60`` tokens a second. The client's throttle ``acquire``s: a caller
    that finds it empty reserves the next token (the balance goes negative) and sleeps until
    that token is due, outside the lock, so waiting threads queue up fairly instead of racing
    for each refill. The simulator's rate limit ``try_take``s: refused, it answers 429.
    """

    def __init__(self, requests_per_minute: int, clock: Clock) -> None:
        if requests_per_minute < 1:
            raise ValueError("requests_per_minute must be at least 1")
        self.requests_per_minute = requests_per_minute
        self.capacity = float(requests_per_minute)
        self.rate = requests_per_minute / 60.0
        self._clock = clock
        self._tokens = self.capacity
        self._updated = clock.monotonic()
        self._lock = threading.Lock()

    def acquire(self) -> None:
        """Take one token, sleeping on the clock until it is due."""
        wait = self._reserve()
        if wait > 0:
            self._clock.sleep(wait)

    def try_take(self) -> float:
        """Take one token if there is one and return 0; else take nothing and return the
        seconds until one is due."""
        with self._lock:
            self._refill()
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return 0.0
            return (1.0 - self._tokens) / self.rate

    def _reserve(self) -> float:
        with self._lock:
            self._refill()
            self._tokens -= 1
            return -self._tokens / self.rate if self._tokens < 0 else 0.0

    def _refill(self) -> None:
        now = self._clock.monotonic()
        refill = max(now - self._updated, 0.0) * self.rate
        self._tokens = min(self.capacity, self._tokens + refill)
        self._updated = now


class Throttle:
    """The rate limit and the cap on concurrent requests, together."""

    def __init__(
        self,
        *,
        requests_per_minute: int,
        max_concurrency: int,
        clock: Clock,
        endpoint_budgets: Mapping[str, int] | None = None,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        self.bucket = TokenBucket(requests_per_minute, clock)
        self.endpoint_buckets = {
            key: TokenBucket(budget, clock) for key, budget in (endpoint_budgets or {}).items()
        }
        """Per-endpoint budgets (keyed by ``Endpoint.key``), on top of the shared one."""
        self.max_concurrency = max_concurrency
        self._in_flight = threading.BoundedSemaphore(max_concurrency)

    @contextmanager
    def slot(self, endpoint_key: str | None = None) -> Iterator[None]:
        """Hold one of ``max_concurrency`` slots and one rate token for a single HTTP attempt
        (and one of the endpoint's own budget, if it has one).

        The endpoint's token is waited for before a slot is taken, so a call held back by its
        endpoint's budget does not keep other calls out; the shared token after the slot, so
        the request goes out as soon as it is due.
        """
        endpoint_bucket = self.endpoint_buckets.get(endpoint_key or "")
        if endpoint_bucket is not None:
            endpoint_bucket.acquire()
        with self._in_flight:
            self.bucket.acquire()
            yield
