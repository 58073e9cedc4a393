"""``Lease``: a named lock in the database that ends with its holder.

A lease row names its holder (``host:pid:random``), since when it holds it and until when. The
holder keeps it with a **heartbeat**: ``Clock.every`` renews it every third of its ``ttl`` (30
s by default) for as long as the holder lives, however long one step takes (an import wait of
ten minutes included). A holder that dies stops renewing, and its lease lapses within one
``ttl``: the next run takes over. A holder that freezes (SIGSTOP, a suspended VM) past its
``ttl`` is overtaken the same way, and when it wakes it must do nothing more, which takes two
checks:

- **before each Qualtrics call** (``QualtricsClient.guarded``) and each step, ``check()``: the
  holder's own view, without the database. It raises ``LeaseLost`` if the heartbeat found the
  lease taken, or if the last successful renewal is older than ``ttl`` (on the monotonic clock,
  measured from before the renewal was sent, so it is never later than the row's expiry);
- **in every write transaction** (``fence()``, see ``linkpool.store.fencing``): the row must
  still name this holder, read under a lock that serialises with a takeover; else the write
  raises ``LeaseLost`` and writes nothing.

Why not a PostgreSQL advisory lock or an OS file lock, which also end with their holder: a
frozen holder keeps them forever, so it could never be overtaken, and a file lock spans one
host and one SQLite file only. A lease is the same on both databases and on any number of hosts.

``take()`` tells a live holder from a dead one before giving up: it watches the row for a
renewal (a live holder renews within a third of its ``ttl``: ``LeaseHeld``, naming it) or a
lapse (then it takes the lease over). A row that runs further ahead than a heartbeat would put
it (an older linkpool's long lease, a clock ahead on the holder's host) is ``LeaseInDoubt``.

    with Lease(store, "refill:nps", clock) as lease:     # take() and start the heartbeat
        with client.guarded(lease.check):
            work(store.fenced(lease.fence()))
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
from datetime import datetime, timedelta
from types import TracebackType

from linkpool.clock import Clock, Repeating
from linkpool.errors import DatabaseError, LeaseHeld, LeaseInDoubt, LeaseLost
from linkpool.store import LeaseFence, LeaseRecord, Store

logger = logging.getLogger("linkpool.lease")

DEFAULT_TTL = timedelta(seconds=30)
HEARTBEATS_PER_TTL = 3
"""The heartbeat renews this many times per ``ttl``: two renewals may fail (a database blip)
before the lease lapses."""
POLLS_PER_TTL = 30
"""``take()`` reads a held lease's row this many times per ``ttl`` while it waits."""
CLOCK_SKEW = timedelta(seconds=5)
"""How far a live holder's expiry may run ahead of ``now + ttl`` here (hosts' clocks differ)."""


def new_holder_id() -> str:
    """``host:pid:random``: who holds a lease, readable by an operator, unique per holder."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def describe_holder(record: LeaseRecord) -> str:
    """``host web-1, pid 4242, since 2026-12-01 09:10:55 UTC, renewed until 09:11:27 UTC``."""
    parts = record.holder.rsplit(":", 2)
    who = f"host {parts[0]}, pid {parts[1]}" if len(parts) == 3 else record.holder
    return (
        f"{who}, since {_when(record.acquired_at)}, renewed until "
        f"{record.expires_at.strftime('%H:%M:%S')} UTC"
    )


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


class Lease:
    def __init__(
        self,
        store: Store,
        name: str,
        clock: Clock,
        *,
        ttl: timedelta = DEFAULT_TTL,
        holder: str | None = None,
    ) -> None:
        if ttl <= timedelta(0):
            raise ValueError("a lease needs a positive ttl")
        self.store = store.unfenced()  # the lease's own row is never fenced
        self.name = name
        self.clock = clock
        self.ttl = ttl
        self.holder = holder or new_holder_id()
        self.held = False
        self._deadline = 0.0  # monotonic: the last successful renewal + ttl
        self._heartbeat: Repeating | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Lease({self.name!r}, holder={self.holder!r}, held={self.held})"

    # --- taking and giving up -----------------------------------------------------------

    def acquire(self) -> bool:
        """Take the lease if it is free, lapsed or already ours; True when we hold it."""
        started = self.clock.monotonic()
        held = self.store.acquire_lease(self.name, self.holder, now=self.clock.now(), ttl=self.ttl)
        with self._lock:
            self.held = held
            if held:
                self._deadline = started + self.ttl.total_seconds()
        return held

    def take(self) -> None:
        """Acquire the lease, waiting (at most about one ``ttl``) to tell its holder's state.

        Raises LeaseHeld once the holder is seen renewing (it is alive), LeaseInDoubt for a
        row no live holder of this version would leave; takes a lease that lapses meanwhile.
        """
        poll = self.ttl.total_seconds() / POLLS_PER_TTL
        give_up = self.clock.monotonic() + (self.ttl + CLOCK_SKEW).total_seconds()
        first: LeaseRecord | None = None
        while not self.acquire():
            current = self.store.lease_record(self.name)
            if current is not None:
                self._judge(current, first)
                first = first or current
            if self.clock.monotonic() > give_up and first is not None:
                raise LeaseInDoubt(
                    f"{self.name}: held by {describe_holder(first)}, which neither renewed "
                    f"nor lapsed for {self.ttl.total_seconds():.0f}s; it is taken over once "
                    "it lapses",
                    lease=self.name,
                )
            self.clock.sleep(poll)

    def _judge(self, current: LeaseRecord, first: LeaseRecord | None) -> None:
        """Raise if ``current`` (the row now) shows a live holder, or one in doubt."""
        renewed = first is not None and (
            current.holder != first.holder or current.expires_at > first.expires_at
        )
        if renewed:
            held_by = describe_holder(current)
            raise LeaseHeld(
                f"{self.name} is already running: held by {held_by}",
                lease=self.name,
                holder=current.holder,
                held_by=held_by,
            )
        if current.expires_at - self.clock.now() > self.ttl + CLOCK_SKEW:
            raise LeaseInDoubt(
                f"{self.name}: held by {describe_holder(current)}, further ahead than a "
                f"{self.ttl.total_seconds():.0f}s lease runs (a holder from an older linkpool, "
                f"or a clock ahead on its host); it is taken over after {_when(current.expires_at)}",
                lease=self.name,
            )

    def renew(self) -> None:
        """Extend the lease by ``ttl`` from now; raise LeaseLost if another holder has it."""
        started = self.clock.monotonic()
        if self.store.renew_lease(self.name, self.holder, now=self.clock.now(), ttl=self.ttl):
            with self._lock:
                self.held = True
                # beats may finish out of order: a later renewal's deadline stands
                self._deadline = max(self._deadline, started + self.ttl.total_seconds())
            return
        with self._lock:
            self.held = False
        raise LeaseLost(
            f"lease {self.name!r} was taken over by "
            f"{self.current_holder() or 'another process'}; this run stopped",
            lease=self.name,
        )

    def release(self) -> None:
        """Stop the heartbeat and give the lease up (a no-op if another holder has it)."""
        self.stop_heartbeat()
        self.store.release_lease(self.name, self.holder)
        with self._lock:
            self.held = False

    # --- the heartbeat and the holder's checks --------------------------------------------

    def start_heartbeat(self) -> None:
        """Renew every ``ttl / HEARTBEATS_PER_TTL`` from now on, until released."""
        if self._heartbeat is None:
            interval = self.ttl.total_seconds() / HEARTBEATS_PER_TTL
            self._heartbeat = self.clock.every(interval, self.beat, name=f"lease:{self.name}")

    def stop_heartbeat(self) -> None:
        heartbeat, self._heartbeat = self._heartbeat, None
        if heartbeat is not None:
            heartbeat.cancel()

    def beat(self) -> None:
        """One renewal by the heartbeat. A database that cannot be reached is retried at the
        next beat (``check()`` stops the holder once its deadline passes); a lease found taken
        ends the heartbeat."""
        if not self.held:
            return
        try:
            self.renew()
        except LeaseLost as exc:
            logger.warning("%s", exc)
            self.stop_heartbeat()
        except DatabaseError as exc:
            logger.warning("lease %r not renewed, retrying at the next beat: %s", self.name, exc)

    def check(self) -> None:
        """Raise LeaseLost unless this holder may go on: it holds the lease, and its last
        renewal is less than ``ttl`` old. Reads no database: safe before every API call."""
        with self._lock:
            held, deadline = self.held, self._deadline
        if not held:
            raise LeaseLost(
                f"lease {self.name!r} was taken over by another process; this run stopped",
                lease=self.name,
            )
        if self.clock.monotonic() >= deadline:
            raise LeaseLost(
                f"lease {self.name!r} was not renewed for {self.ttl.total_seconds():.0f}s "
                "(this process was paused, or the database unreachable): another process may "
                "have taken over, so this run stopped",
                lease=self.name,
            )

    def fence(self) -> LeaseFence:
        """What this holder's write transactions check (``Store.fenced``)."""
        return LeaseFence(self.name, self.holder, self.check, self._lost)

    def _lost(self) -> None:
        """A write found the lease taken over: no more calls, no more beats."""
        with self._lock:
            self.held = False
        self.stop_heartbeat()

    # --- who holds it -------------------------------------------------------------------

    def current_holder(self) -> str | None:
        """Who holds the lease now (any holder), or None when it is free or lapsed."""
        return self.store.lease_holder(self.name, now=self.clock.now())

    def record(self) -> LeaseRecord | None:
        return self.store.lease_record(self.name)

    def __enter__(self) -> Lease:
        self.take()
        self.start_heartbeat()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop_heartbeat()
        if self.held:
            self.release()


__all__ = ["DEFAULT_TTL", "Lease", "describe_holder", "new_holder_id"]
