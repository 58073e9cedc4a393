"""When to retry a Qualtrics call, and how long to wait first."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from linkpool.clock import utc


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, bounded by a retry budget.

    ``max_retries`` counts retries after the first attempt. ``max_retry_after`` bounds how long
    a server-requested wait (``Retry-After``) is honoured: asked to wait longer, the client gives
    up at once and raises, rather than block a refill or a CLI command for that long.
    """

    max_retries: int = 5
    base_delay: float = 0.5
    max_backoff: float = 30.0
    max_retry_after: float = 300.0

    def backoff(self, retry: int, rng: random.Random) -> float:
        """Seconds to wait before retry number ``retry`` (0-based): uniform in [0, cap]."""
        cap = min(self.max_backoff, self.base_delay * 2**retry)
        return rng.uniform(0.0, cap)


def is_retryable_status(status_code: int) -> bool:
    return status_code == 429 or 500 <= status_code <= 599


def was_not_sent(error: httpx.TransportError) -> bool:
    """True when the request certainly never reached Qualtrics (so even a POST may be retried)."""
    return isinstance(error, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)


def retry_after(response: httpx.Response, body: Any, now: datetime) -> float | None:
    """The wait Qualtrics asked for, in seconds, or None if it did not ask.

    Reads the ``Retry-After`` header (delta-seconds or an HTTP date, taken relative to ``now``)
    and ``meta.error.retryAfter`` in the body (seconds); when both are present the longer wins.
    """
    waits = [
        wait
        for wait in (_header_wait(response.headers.get("Retry-After"), now), _body_wait(body))
        if wait is not None
    ]
    return max(waits) if waits else None


def _header_wait(value: str | None, now: datetime) -> float | None:
    if not value:
        return None
    value = value.strip()
    seconds = _seconds(value)
    if seconds is not None:
        return seconds
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, (utc(when) - utc(now)).total_seconds())


def _body_wait(body: Any) -> float | None:
    if not isinstance(body, dict):
        return None
    meta = body.get("meta")
    error = meta.get("error") if isinstance(meta, dict) else None
    if not isinstance(error, dict):
        return None
    return _seconds(error.get("retryAfter"))


def _seconds(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)
