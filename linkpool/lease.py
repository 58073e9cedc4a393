"""``Lease``: a named lock in the database, so that a job runs in one process at a time.

A lease row names its holder and an expiry. The holder renews it between steps; if it dies, the
lease lapses after ``ttl`` and another process may take it. A holder that finds, when renewing,
that someone else took the lease over stops with ``LeaseLost`` instead of working on in
parallel. The TTL must therefore outlast the longest single step between two renewals.

    with Lease(store, "refill:nps", clock, ttl=timedelta(minutes=15)) as lease:
        step_one()
        lease.renew()
        step_two()
"""

from __future__ import annotations

import os
import secrets
import socket
from datetime import timedelta
from types import TracebackType

from linkpool.clock import Clock
from linkpool.errors import LeaseHeld, LeaseLost
from linkpool.store import Store

DEFAULT_TTL = timedelta(minutes=5)


def new_holder_id() -> str:
    """``host:pid:random``: who holds a lease, readable by an operator, unique per holder."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


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
        self.store = store
        self.name = name
        self.clock = clock
        self.ttl = ttl
        self.holder = holder or new_holder_id()
        self.held = False

    def __repr__(self) -> str:
        return f"Lease({self.name!r}, holder={self.holder!r}, held={self.held})"

    def acquire(self) -> bool:
        """Take the lease if it is free, lapsed or already ours; True when we hold it."""
        self.held = self.store.acquire_lease(
            self.name, self.holder, now=self.clock.now(), ttl=self.ttl
        )
        return self.held

    def renew(self) -> None:
        """Extend the lease by ``ttl`` from now; raise LeaseLost if another holder has it."""
        if self.store.renew_lease(self.name, self.holder, now=self.clock.now(), ttl=self.ttl):
            self.held = True
            return
        self.held = False
        raise LeaseLost(
            f"lease {self.name!r} was taken over by "
            f"{self.current_holder() or 'another process'}; this run stopped",
            lease=self.name,
        )

    def release(self) -> None:
        """Give the lease up (a no-op if another holder has it meanwhile)."""
        self.store.release_lease(self.name, self.holder)
        self.held = False

    def current_holder(self) -> str | None:
        """Who holds the lease now (any holder), or None when it is free or lapsed."""
        return self.store.lease_holder(self.name, now=self.clock.now())

    def __enter__(self) -> Lease:
        if not self.acquire():
            raise LeaseHeld(
                f"{self.name} is already running (lease held by "
                f"{self.current_holder() or 'another process'})",
                lease=self.name,
            )
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.held:
            self.release()


__all__ = ["DEFAULT_TTL", "Lease", "new_holder_id"]
