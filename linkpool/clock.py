"""The one source of "now".

Everything that depends on time takes a ``Clock``, so tests move time instead of sleeping.
``SystemClock`` is the real thing; ``ManualClock`` only moves when told to (its ``sleep``
advances it, so code that backs off or polls runs instantly under test).

``every(seconds, callback)`` runs ``callback`` repeatedly beside the caller (a lease's
heartbeat): on ``SystemClock`` from a daemon thread; on ``ManualClock`` from whichever thread
advances the clock, at each due time in order, so that a heartbeat keeps beating through a
simulated wait exactly as it would through a real one, and a test can stop it to play a holder
that died or froze.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

logger = logging.getLogger("linkpool.clock")


class Repeating(Protocol):
    """A callback that ``Clock.every`` runs repeatedly until cancelled."""

    def cancel(self) -> None:
        """Run it no more (a run under way finishes)."""


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back, for rates and timeouts."""

    def sleep(self, seconds: float) -> None:
        """Wait this long."""

    def every(self, seconds: float, callback: Callable[[], None], *, name: str) -> Repeating:
        """Run ``callback`` every ``seconds`` (first after one interval) until cancelled."""


PAUSE_SLICE = 1.0
"""How often a pause that may be cut short looks at its stop event, in seconds."""


def pause(clock: Clock, seconds: float, stop: threading.Event | None) -> bool:
    """Sleep ``seconds`` on ``clock``, in slices, unless ``stop`` is set meanwhile: a
    shutdown never waits out a long backoff or poll. True if it slept the whole time."""
    remaining = seconds
    while remaining > 0:
        if stop is not None and stop.is_set():
            return False
        step = min(remaining, PAUSE_SLICE) if stop is not None else remaining
        clock.sleep(step)
        remaining -= step
    return stop is None or not stop.is_set()


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)

    def every(self, seconds: float, callback: Callable[[], None], *, name: str) -> Repeating:
        if seconds <= 0:
            raise ValueError("a repeating callback needs a positive interval")
        return _RepeatingThread(seconds, callback, name)


class _RepeatingThread:
    """``SystemClock.every``: a daemon thread, so that it never keeps a process alive."""

    def __init__(self, seconds: float, callback: Callable[[], None], name: str) -> None:
        self._cancelled = threading.Event()
        self._seconds = seconds
        self._callback = callback
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._cancelled.wait(self._seconds):
            _run_logging_errors(self._callback)

    def cancel(self) -> None:
        self._cancelled.set()
        if self._thread is not threading.current_thread():
            self._thread.join()


def _run_logging_errors(callback: Callable[[], None]) -> None:
    """A repeating callback's failure is logged and the next run comes as planned."""
    try:
        callback()
    except Exception:  # noqa: BLE001 - the repeating thread must survive its callback
        logger.exception("a repeating callback failed")


@dataclass(eq=False)
class _ManualTimer:
    clock: ManualClock
    seconds: float
    callback: Callable[[], None]
    due: float
    cancelled: bool = field(default=False)

    def cancel(self) -> None:
        self.clock._cancel(self)


class ManualClock:
    """A clock that stands still until advanced; thread-safe."""

    def __init__(self, start: datetime | None = None) -> None:
        start = start or datetime(2026, 1, 1, tzinfo=UTC)
        if start.tzinfo is None:
            raise ValueError("ManualClock needs a timezone-aware start")
        self._now = start.astimezone(UTC)
        self._elapsed = 0.0
        self._timers: list[_ManualTimer] = []
        self._lock = threading.Lock()  # guards the readings and the timers
        self._advancing = threading.RLock()  # one advance (and its callbacks) at a time

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def monotonic(self) -> float:
        with self._lock:
            return self._elapsed

    def sleep(self, seconds: float) -> None:
        self.advance(timedelta(seconds=max(seconds, 0.0)))

    def every(self, seconds: float, callback: Callable[[], None], *, name: str) -> Repeating:
        if seconds <= 0:
            raise ValueError("a repeating callback needs a positive interval")
        with self._lock:
            timer = _ManualTimer(self, seconds, callback, due=self._elapsed + seconds)
            self._timers.append(timer)
        return timer

    def _cancel(self, timer: _ManualTimer) -> None:
        with self._lock:
            timer.cancelled = True
            if timer in self._timers:
                self._timers.remove(timer)

    def advance(self, delta: timedelta) -> None:
        """Move on by ``delta``, stopping at each timer due on the way to run it, with the
        clock reading its due time. Time stands still while a callback runs: other threads'
        advances wait for it, as a callback is instantaneous in the clock's time."""
        remaining = delta.total_seconds()
        with self._advancing:
            while True:
                with self._lock:
                    timer = self._next_due(within=remaining)
                    step = remaining if timer is None else max(timer.due - self._elapsed, 0.0)
                    self._now += timedelta(seconds=step)
                    self._elapsed += step
                    remaining -= step
                    if timer is None:
                        return
                    timer.due += timer.seconds
                _run_logging_errors(timer.callback)

    def _next_due(self, *, within: float) -> _ManualTimer | None:
        due = [t for t in self._timers if t.due <= self._elapsed + within]
        return min(due, key=lambda t: t.due) if due else None


def utc(value: datetime) -> datetime:
    """``value`` as an aware UTC datetime; naive values are taken to be UTC already."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)
