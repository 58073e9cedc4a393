"""Soak: the daemon, steady claimers and a misbehaving Qualtrics, for a while; then a report.

Not part of CI. Everything runs in this process against real time: the simulator (rate limit,
a share of 5xx answers, a lagging links listing) mounted on the client's transport, the daemon
(``linkpool.scheduler``: leader lease, refill, gc and sync on APScheduler) in a thread, and
claimer threads calling ``LinkPool.claim`` at a steady total rate. Links live for minutes, not
days, so refill, the too-old rule, expiry and gc all happen within the run.

At the end it stops the claimers and the daemon (as SIGTERM would) and checks the invariants:
no link was handed out twice, every claimed link that has not expired opens on the simulator,
no live mailing list is unknown to the database, and no claim failed while the pool had stock.

    python bench/soak.py                 # 10 minutes on a SQLite file
    python bench/soak.py --short         # a ~30 s smoke run
    python bench/soak.py --minutes 3 --database-url postgresql://postgres@127.0.0.1/soak

Exits 1 if an invariant is broken.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx

from linkpool import LinkPool, PoolExhausted
from linkpool.clock import SystemClock
from linkpool.config import Settings, settings_from_mapping
from linkpool.db import create_engine, upgrade
from linkpool.scheduler import Daemon, build_scheduler
from linkpool.simulator import Simulator
from linkpool.store import Store

POOL = "soak"
SURVEY = "SV_SoakSurvey00001"


@dataclass(frozen=True)
class Profile:
    """How hard and how long: the defaults are the 10-minute run, ``SHORT`` the smoke run."""

    seconds: float = 600.0
    claims_per_second: float = 4.0
    claimers: int = 4
    rate_limit_per_minute: int = 240
    error_rate: float = 0.02
    link_lag: timedelta = timedelta(seconds=5)
    link_lag_fraction: float = 0.3
    target_available: int = 600
    low_water: int = 300
    list_size: int = 200
    link_ttl: str = "4m"
    min_remaining: str = "1m"
    refill_interval: str = "10s"
    gc_interval: str = "30s"
    sync_interval: str = "2s"
    gc_grace: str = "10s"
    sample_every: float = 5.0


SHORT = Profile(
    seconds=30.0,
    rate_limit_per_minute=30,
    claims_per_second=3.0,
    target_available=300,
    low_water=150,
    list_size=100,
    link_ttl="90s",
    min_remaining="20s",
    refill_interval="5s",
    gc_interval="10s",
    sync_interval="1s",
    gc_grace="2s",
    sample_every=1.0,
)


class CountingTransport(httpx.BaseTransport):
    """Counts the HTTP status of every answer the client receives (retries included)."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner = inner
        self.statuses: Counter[int] = Counter()
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        with self._lock:
            self.statuses[response.status_code] += 1
        return response


@dataclass
class ClaimLog:
    """What the claimers got: every claim, and the claims refused as exhausted."""

    claims: list[Any] = field(default_factory=list)
    exhausted: list[tuple[float, int]] = field(default_factory=list)  # (time, claimable then)
    errors: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)


def soak_settings(profile: Profile, database_url: str, simulator: Simulator) -> Settings:
    return settings_from_mapping(
        {
            "database": {"url": database_url},
            "qualtrics": {
                "base_url": simulator.base_url,
                "directory_id": simulator.directory_id,
                "requests_per_minute": 3000,  # above the simulator's limit: 429s are absorbed
                "max_concurrency": 4,
            },
            "schedule": {
                "refill_interval": profile.refill_interval,
                "gc_interval": profile.gc_interval,
                "sync_interval": profile.sync_interval,
            },
            "gc": {"grace": profile.gc_grace},
            "pools": {
                POOL: {
                    "survey_id": SURVEY,
                    "target_available": profile.target_available,
                    "low_water": profile.low_water,
                    "list_size": profile.list_size,
                    "link_ttl": profile.link_ttl,
                    "min_remaining": profile.min_remaining,
                    "embedded_data": {"source": "soak"},
                }
            },
        }
    )


def claimer(
    lp: LinkPool, number: int, interval: float, stop: threading.Event, log: ClaimLog
) -> None:
    """Claim one link every ``interval`` seconds (on a fixed schedule, not after each claim)."""
    due = time.monotonic() + interval * number / 10
    count = 0
    while not stop.wait(max(0.0, due - time.monotonic())):
        due += interval
        count += 1
        try:
            claim = lp.claim(
                POOL,
                recipient=f"cust-{number}-{count}",
                key=f"soak-{number}-{count}",
                data={"n": count},
            )
        except PoolExhausted:
            with log.lock:
                log.exhausted.append((time.monotonic(), lp.counts(POOL).claimable))
            continue
        except Exception as exc:  # noqa: BLE001 - a soak counts failures, it does not stop
            with log.lock:
                log.errors[type(exc).__name__] += 1
            continue
        with log.lock:
            log.claims.append(claim)


def sampler(
    lp: LinkPool, every: float, stop: threading.Event, samples: list[tuple[float, int, int]]
) -> None:
    started = time.monotonic()
    while not stop.wait(every):
        counts = lp.counts(POOL)
        samples.append((time.monotonic() - started, counts.claimable, counts.available))


def wait_for_stock(lp: LinkPool, level: int, timeout: float) -> None:
    """Let the first refill stock the pool before anyone claims (bounded by ``timeout``)."""
    deadline = time.monotonic() + timeout
    while lp.counts(POOL).claimable < level and time.monotonic() < deadline:
        time.sleep(0.2)


def run(profile: Profile, database_url: str | None, seed: int) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="linkpool-soak-"))
    database_url = database_url or f"sqlite:///{workdir / 'soak.db'}"
    clock = SystemClock()
    simulator = Simulator(surveys=[SURVEY], clock=clock, seed=seed)
    simulator.faults.rate_limit_per_minute = profile.rate_limit_per_minute
    simulator.faults.error_rate = profile.error_rate
    simulator.faults.link_lag = profile.link_lag
    simulator.faults.link_lag_fraction = profile.link_lag_fraction
    settings = soak_settings(profile, database_url, simulator)

    engine = create_engine(database_url)
    upgrade(engine)
    transport = CountingTransport(simulator.transport())
    client = simulator.client(transport=transport, requests_per_minute=3000, max_concurrency=4)
    daemon = Daemon(settings, client, Store(engine), clock)
    scheduler = build_scheduler(daemon, settings.schedule)
    lp = LinkPool.from_settings(settings, clock=clock)

    log = ClaimLog()
    samples: list[tuple[float, int, int]] = []
    stop = threading.Event()
    interval = profile.claimers / profile.claims_per_second
    threads = [
        threading.Thread(target=claimer, args=(lp, n, interval, stop, log), daemon=True)
        for n in range(profile.claimers)
    ]
    threads.append(
        threading.Thread(
            target=sampler, args=(lp, profile.sample_every, stop, samples), daemon=True
        )
    )
    scheduler_thread = threading.Thread(target=scheduler.start, name="daemon", daemon=True)

    print(f"soak: {profile.seconds:.0f}s, database {engine.url.render_as_string()}", flush=True)
    started = time.monotonic()
    scheduler_thread.start()
    wait_for_stock(lp, profile.low_water, timeout=profile.seconds / 3)
    claiming_from = time.monotonic()
    for thread in threads:
        thread.start()
    time.sleep(max(0.0, profile.seconds - (time.monotonic() - started)))

    stop.set()
    for thread in threads:
        thread.join()
    claiming = time.monotonic() - claiming_from
    problems, opened = check_claims(lp, simulator, log)  # before links age during shutdown
    stopping = time.monotonic()
    daemon.stop()  # as on SIGTERM: refill stops between steps, leases are released
    scheduler.shutdown(wait=True)
    scheduler_thread.join()
    daemon.close()
    shutdown = time.monotonic() - stopping
    elapsed = time.monotonic() - started

    problems += check_lists(lp, simulator)
    timing = Timing(elapsed, claiming, shutdown, opened)
    print_report(profile, timing, lp, simulator, transport, log, samples, problems)
    lp.close()
    client.close()
    engine.dispose()
    return 1 if problems else 0


@dataclass(frozen=True)
class Timing:
    elapsed: float
    claiming: float
    shutdown: float
    links_opened: int


def check_claims(lp: LinkPool, simulator: Simulator, log: ClaimLog) -> tuple[list[str], int]:
    """No link handed out twice; every claimed unexpired link opens; no claim refused while
    the pool had stock. Returns the problems and how many links were opened."""
    problems: list[str] = []
    fresh = [claim for claim in log.claims if not claim.replayed]
    link_ids = Counter(claim.link_id for claim in fresh)
    urls = Counter(claim.url for claim in fresh)
    twice = [link_id for link_id, n in link_ids.items() if n > 1]
    if twice or any(n > 1 for n in urls.values()):
        problems.append(f"{len(twice)} link(s) handed out more than once")
    claimed_in_db = lp.counts(POOL).claimed
    if claimed_in_db != len(fresh):
        problems.append(f"the database holds {claimed_in_db} claims, the claimers got {len(fresh)}")
    now = lp.clock.now()
    unexpired = [claim for claim in fresh if claim.expires_at > now]
    broken = [claim.link_id for claim in unexpired if not simulator.open_link(claim.url).ok]
    if broken:
        problems.append(f"{len(broken)} claimed unexpired link(s) do not open: {broken[:5]}")
    starved = [claimable for _, claimable in log.exhausted if claimable > 0]
    if starved:
        problems.append(f"{len(starved)} claim(s) refused while the pool had stock")
    return problems, len(unexpired)


def check_lists(lp: LinkPool, simulator: Simulator) -> list[str]:
    """After shutdown: no live mailing list on Qualtrics is unknown to the database."""
    problems: list[str] = []
    known = {
        row.mailing_list_id
        for row in lp.store.lists_in_states(
            ("planned", "list_created", "importing", "imported", "distributed", "ready", "failed")
        )
        if row.deleted_at is None
    }
    unknown = sorted(set(simulator.mailing_lists()) - known)
    if unknown:
        problems.append(f"{len(unknown)} live mailing list(s) unknown to the database")
    return problems


def print_report(
    profile: Profile,
    timing: Timing,
    lp: LinkPool,
    simulator: Simulator,
    transport: CountingTransport,
    log: ClaimLog,
    samples: list[tuple[float, int, int]],
    problems: list[str],
) -> None:
    counts = lp.counts(POOL)
    fresh = [claim for claim in log.claims if not claim.replayed]
    statuses = transport.statuses
    calls = sum(statuses.values())
    claimable = [sample[1] for sample in samples] or [0]
    rows = [
        (
            "duration",
            f"{timing.elapsed:.0f} s: {timing.claiming:.0f} s claiming (after the first "
            f"refill), {timing.shutdown:.0f} s shutting the daemon down",
        ),
        ("claims served", f"{len(fresh)} ({len(fresh) / timing.claiming:.1f}/s)"),
        ("claims refused (pool empty)", str(len(log.exhausted))),
        ("claim errors", ", ".join(f"{k} {v}" for k, v in log.errors.items()) or "0"),
        (
            "claimable stock",
            f"min {min(claimable)}, median {statistics.median(claimable):.0f}, "
            f"max {max(claimable)} (low water {profile.low_water}, "
            f"target {profile.target_available})",
        ),
        ("API calls (HTTP answers)", str(calls)),
        ("429s absorbed", str(statuses[429])),
        ("5xx absorbed", str(sum(n for status, n in statuses.items() if status >= 500))),
        ("calls by endpoint", ", ".join(f"{k} {v}" for k, v in sorted(simulator.calls.items()))),
        (
            "write-backs",
            f"done {len(fresh) - counts.writeback_pending - counts.writeback_failed}, "
            f"pending {counts.writeback_pending}, failed {counts.writeback_failed}",
        ),
        (
            "lists",
            f"{len(counts.lists)} live in the database, "
            f"{len(simulator.mailing_lists())} live on Qualtrics",
        ),
        ("links voided or expired", f"void {counts.void}, expired {counts.expired}"),
        ("claimed unexpired links opened", str(timing.links_opened)),
        ("invariants", "all hold" if not problems else "; ".join(problems)),
    ]
    width = max(len(name) for name, _ in rows)
    print()
    for name, value in rows:
        print(f"{name.ljust(width)}  {value}")
    print()
    print("claimable stock over time (seconds: claimable / available):")
    step = max(1, len(samples) // 20)
    print("  " + "  ".join(f"{t:.0f}s:{c}/{a}" for t, c, a in samples[::step]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--short", action="store_true", help="A ~30 s smoke run.")
    parser.add_argument("--minutes", type=float, help="How long (default 10; --short: 0.5).")
    parser.add_argument("--claims-per-second", type=float, help="Total claim rate.")
    parser.add_argument("--database-url", help="Default: a SQLite file in a temporary directory.")
    parser.add_argument("--seed", type=int, default=0, help="Seeds the simulator's faults.")
    parser.add_argument("--verbose", action="store_true", help="Log the daemon's job lines.")
    args = parser.parse_args()
    profile = SHORT if args.short else Profile()
    changes: dict[str, Any] = {}
    if args.minutes is not None:
        changes["seconds"] = args.minutes * 60
    if args.claims_per_second is not None:
        changes["claims_per_second"] = args.claims_per_second
    if changes:
        profile = Profile(**{**profile.__dict__, **changes})
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if not args.verbose:  # "skipped: maximum number of running instances" is expected
        logging.getLogger("apscheduler").setLevel(logging.ERROR)
    return run(profile, args.database_url, args.seed)


if __name__ == "__main__":
    sys.exit(main())
