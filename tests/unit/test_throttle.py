"""The token bucket on a manual clock: its budget, its refill and its cap."""

from __future__ import annotations

from datetime import timedelta

import pytest

from linkpool.clock import ManualClock
from linkpool.qualtrics.throttle import Throttle, TokenBucket


def acquire_times(bucket: TokenBucket, clock: ManualClock, count: int) -> list[float]:
    times = []
    for _ in range(count):
        bucket.acquire()
        times.append(clock.monotonic())
    return times


def test_a_full_bucket_allows_one_minutes_budget_then_refills_at_the_rate(clock):
    bucket = TokenBucket(120, clock)

    times = acquire_times(bucket, clock, 125)

    assert times[:120] == [0.0] * 120
    assert times[120:] == pytest.approx([0.5, 1.0, 1.5, 2.0, 2.5])


def test_idle_time_refills_no_more_than_the_capacity(clock):
    bucket = TokenBucket(60, clock)
    acquire_times(bucket, clock, 60)
    clock.advance(timedelta(hours=1))
    start = clock.monotonic()

    times = acquire_times(bucket, clock, 61)

    assert [t - start for t in times] == pytest.approx([0.0] * 60 + [1.0])


def test_limits_must_be_positive(clock):
    with pytest.raises(ValueError):
        TokenBucket(0, clock)
    with pytest.raises(ValueError):
        Throttle(requests_per_minute=60, max_concurrency=0, clock=clock)
