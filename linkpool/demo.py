"""``linkpool demo``: the whole life of a pool in a few seconds, with no Qualtrics account.

A simulated Qualtrics runs in-process and a fresh SQLite database sits in a temporary directory
(or ``--dir``). One clock, shared by the simulator and linkpool, lets the demo move time past
the links' expiry instead of waiting 30 days. Every figure printed is computed from what just
happened; personal links are never printed (they are bearer credentials), only their ids.
"""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from linkpool.clock import ManualClock
from linkpool.config import GcSettings, PoolSettings, QualtricsSettings, Settings
from linkpool.db import create_engine, upgrade
from linkpool.errors import ConfigError
from linkpool.gc import collect
from linkpool.models import ListState
from linkpool.pool import Claim, LinkPool
from linkpool.qualtrics.client import QualtricsClient
from linkpool.refill import refill
from linkpool.simulator import DEFAULT_SURVEY_ID, Simulator
from linkpool.status import pool_status
from linkpool.store import Store
from linkpool.sync import sync

POOL = "checkout-nps"
DEMO_DATABASE = "linkpool-demo.db"
DEMO_MARKER = "linkpool-demo.marker"
"""The demo's database has its own name, never ``linkpool.db``, and a marker file beside it
says the demo made it: a reused ``--dir`` starts afresh only over files the demo created."""
SURVEY_ID = DEFAULT_SURVEY_ID
SLOW_PATH_CALLS_PER_LINK = 5

Echo = Callable[[str], None]
Table = Callable[[Sequence[str], Sequence[Sequence[object]]], str]
"""Renders headers and rows as text: the CLI passes its own (``format_table``), so the demo's
status looks like ``linkpool status`` without the demo importing the CLI that imports it."""


@dataclass(frozen=True)
class DemoResult:
    """The demo's figures, for tests and for anyone embedding it."""

    links_added: int
    lists_created: int
    api_calls: int
    claims: int
    distinct_links: int
    repeats: int
    repeats_same_link: int
    written_back: int
    lists_deleted: int
    lists_left_on_qualtrics: int


def demo_settings(database_url: str, sim: Simulator) -> Settings:
    pool = PoolSettings(
        name=POOL,
        survey_id=SURVEY_ID,
        target_available=400,
        low_water=200,
        list_size=200,
        link_ttl=timedelta(days=30),
        min_remaining=timedelta(days=2),
        embedded_data={"source": "linkpool-demo"},
    )
    return Settings(
        database_url=database_url,
        qualtrics=QualtricsSettings(base_url=sim.base_url, directory_id=sim.directory_id),
        pools={POOL: pool},
        gc=GcSettings(grace=timedelta(hours=1)),
    )


def run_demo(
    directory: Path | None = None,
    *,
    table: Table,
    echo: Echo = print,
    claims: int = 120,
    repeats: int = 30,
    threads: int = 8,
) -> DemoResult:
    """Run the demo in ``directory`` (a temporary one if None), printing through ``echo``
    and rendering its status tables with ``table``."""
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)
        return _Demo(directory, echo, table).run(claims, repeats, threads)
    with tempfile.TemporaryDirectory(prefix="linkpool-demo-") as temporary:
        return _Demo(Path(temporary), echo, table).run(claims, repeats, threads)


class _Demo:
    def __init__(self, directory: Path, echo: Echo, table: Table) -> None:
        self.echo = echo
        self.table = table
        self.database = directory / DEMO_DATABASE
        _clear_previous_demo(directory)
        self.url = f"sqlite:///{self.database}"
        self.clock = ManualClock(datetime.now(UTC).replace(microsecond=0))
        self.sim = Simulator(clock=self.clock, surveys=(SURVEY_ID,))
        self.settings = demo_settings(self.url, self.sim)
        self.pool = self.settings.pools[POOL]

    def run(self, claims: int, repeats: int, threads: int) -> DemoResult:
        engine = create_engine(self.url)
        upgrade(engine)
        store = Store(engine)
        client = self.sim.client()
        lp = LinkPool(database_url=self.url, pools=self.settings.pools, clock=self.clock)
        try:
            self.step(1, "a simulated Qualtrics in-process, a fresh SQLite database")
            self.echo(f"   database: {self.database}")
            refilled = self.refill(client, store)
            burst = self.claim_burst(lp, claims, repeats, threads)
            self.status(lp, "4. status")
            written = self.sync(client, store, burst)
            deleted = self.expire_and_collect(lp, client, store)
            self.final_state(lp, store)
        finally:
            lp.close()
            client.close()
            engine.dispose()
        return DemoResult(
            links_added=refilled[0],
            lists_created=refilled[1],
            api_calls=refilled[2],
            claims=claims,
            distinct_links=burst.distinct,
            repeats=repeats,
            repeats_same_link=burst.same_link,
            written_back=written,
            lists_deleted=deleted,
            lists_left_on_qualtrics=len(self.sim.mailing_lists()),
        )

    def step(self, number: int, title: str) -> None:
        self.echo("")
        self.echo(f"{number}. {title}")

    def refill(self, client: QualtricsClient, store: Store) -> tuple[int, int, int]:
        p = self.pool
        self.step(
            2,
            f"refill pool {POOL!r}: target {p.target_available}, low water {p.low_water}, "
            f"lists of {p.list_size}",
        )
        started = time.perf_counter()
        report = refill(self.settings, client, store, self.clock)
        elapsed = time.perf_counter() - started
        pool = report.pools[0]
        calls = sum(pool.api_calls.values())
        self.echo(
            f"   {pool.lists_ready} mailing lists, {pool.links_added} personal links stored "
            f"in {elapsed:.2f}s, claimable {pool.claimable_before} -> {pool.claimable_after}"
        )
        for endpoint, count in sorted(pool.api_calls.items()):
            self.echo(f"   {count:>5}  {endpoint}")
        if pool.links_added:
            per_thousand = calls * 1000 / pool.links_added
            slow = pool.links_added * SLOW_PATH_CALLS_PER_LINK
            self.echo(
                f"   {calls} API calls in all: {per_thousand:.1f} per 1,000 links "
                f"(the 5-calls-per-recipient path: {slow:,})"
            )
        return pool.links_added, pool.lists_ready, calls

    def claim_burst(self, lp: LinkPool, claims: int, repeats: int, threads: int) -> _Burst:
        self.step(3, f"{claims} claims from {threads} threads at once, then {repeats} repeats")
        burst = _Burst(lp)
        with ThreadPoolExecutor(max_workers=threads) as executor:
            started = time.perf_counter()
            firsts = list(executor.map(burst.claim, range(claims)))
            elapsed = time.perf_counter() - started
            replays = list(executor.map(burst.claim, range(repeats)))
        burst.distinct = len({claim.link_id for claim in firsts})
        burst.same_link = sum(
            1
            for claim, replay in zip(firsts, replays, strict=False)
            if replay.replayed and replay.link_id == claim.link_id
        )
        burst.firsts = firsts
        latencies = sorted(burst.latencies[:claims])
        self.echo(
            f"   {claims} claims in {elapsed * 1000:.0f} ms: {burst.distinct} distinct links "
            f"(no link handed out twice)"
        )
        self.echo(
            f"   claim latency: median {statistics.median(latencies) * 1000:.2f} ms, "
            f"slowest {latencies[-1] * 1000:.2f} ms; no Qualtrics call on this path"
        )
        self.echo(
            f"   {repeats} repeats with the same idempotency keys: {burst.same_link} returned "
            "the link first claimed"
        )
        first = firsts[0]
        self.echo(
            f"   e.g. recipient {first.recipient!r} got link #{first.link_id} "
            f"(contact {first.contact_id}), expiring {first.expires_at:%Y-%m-%d %H:%M} UTC"
        )
        return burst

    def status(self, lp: LinkPool, title: str) -> None:
        self.echo("")
        self.echo(title)
        figures = pool_status(lp.counts(POOL), self.pool)
        headers = ("pool", "claimable", "claimed", "expired", "void", "lists", "health")
        row = (
            POOL,
            figures["claimable"],
            figures["claimed"],
            figures["expired"],
            figures["void"],
            len(figures["lists"]),
            figures["health"],
        )
        for line in self.table(headers, [row]).splitlines():
            self.echo(f"   {line}")

    def sync(self, client: QualtricsClient, store: Store, burst: _Burst) -> int:
        self.step(5, "sync: write each recipient onto its placeholder contact in Qualtrics")
        report = sync(self.settings, client, store, self.clock)
        self.echo(
            f"   {report.written} contacts updated with {sum(report.api_calls.values())} API calls"
        )
        first = burst.firsts[0]
        embedded = self.sim.contact(first.contact_id).get("embeddedData", {})
        field = self.settings.sync.recipient_field
        self.echo(f"   contact {first.contact_id} now carries {field}={embedded.get(field)!r}")
        taken = self.sim.respond(first.url)
        again = self.sim.open_link(first.url)
        self.echo(
            f"   the respondent takes the survey: {'ok' if taken.ok else taken.reason}; "
            f"the link opened again: {'ok' if again.ok else again.reason}"
        )
        return report.written

    def expire_and_collect(self, lp: LinkPool, client: QualtricsClient, store: Store) -> int:
        jump = self.pool.link_ttl + self.settings.gc.grace + timedelta(minutes=1)
        self.clock.advance(jump)
        self.step(6, f"time moves on {jump.days} days: every link has expired")
        self.status(lp, "   status now")
        self.step(7, "gc: delete what can no longer serve anyone")
        before = len(self.sim.mailing_lists())
        report = collect(self.settings, client, store, self.clock)
        after = len(self.sim.mailing_lists())
        self.echo(
            f"   {report.lists_deleted} lists deleted, {report.links_voided} unclaimed links "
            f"voided, {sum(report.api_calls.values())} API calls"
        )
        self.echo(f"   mailing lists on the simulated Qualtrics: {before} -> {after}")
        return report.lists_deleted

    def final_state(self, lp: LinkPool, store: Store) -> None:
        self.status(lp, "8. final state")
        states = Counter(row.state for row in store.lists_in_states(_ALL_STATES))
        summary = ", ".join(f"{count} {state}" for state, count in sorted(states.items()))
        self.echo(f"   lists in the database: {summary}; claims kept for the record")


def _clear_previous_demo(directory: Path) -> None:
    """Remove the database of an earlier demo in ``directory``, and only that: a file of the
    demo's name that the demo's marker does not vouch for is refused, never deleted."""
    database = directory / DEMO_DATABASE
    marker = directory / DEMO_MARKER
    files = [Path(f"{database}{suffix}") for suffix in ("", "-wal", "-shm")]
    present = [path for path in files if path.exists()]
    if present and not marker.is_file():
        raise ConfigError(
            f"{present[0]} exists and the demo did not create it: refusing to touch it; "
            "run the demo with another --dir"
        )
    for path in present:
        path.unlink()
    marker.write_text("created by `linkpool demo`: its database may be replaced by the next demo\n")


_ALL_STATES = (
    *ListState.LIVE,
    ListState.REAPING,
    ListState.DISTRIBUTION_DELETED,
    ListState.DELETED,
)


class _Burst:
    """Claims from many threads: each order claims once, a repeat replays its key."""

    def __init__(self, lp: LinkPool) -> None:
        self.lp = lp
        self.latencies: list[float] = []
        self.distinct = 0
        self.same_link = 0
        self.firsts: list[Claim] = []
        self._lock = threading.Lock()

    def claim(self, order: int) -> Claim:
        started = time.perf_counter()
        claim = self.lp.claim(
            POOL,
            recipient=f"customer-{order:04d}",
            key=f"order-{order:04d}",
            data={"order": order, "store": f"{order % 7 + 1:02d}"},
        )
        with self._lock:
            self.latencies.append(time.perf_counter() - started)
        return claim


__all__ = ["DEMO_DATABASE", "DemoResult", "demo_settings", "run_demo"]
