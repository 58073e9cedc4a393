"""Refill's API cost and wall time, against the simulator in-process.

1. API calls per 1,000 links provisioned, for several list sizes (no latency, a manual clock:
   the counts do not depend on time). The path users run today costs at least 5 calls per
   recipient, 5,000 per 1,000.
2. Wall time to provision ``--links`` links with ``--latency`` seconds added to every call and
   the simulator (and client) limited to ``--rpm`` requests a minute, on the real clock, beside
   the lower bounds they allow: calls x latency / concurrency, and calls / (rpm / 60).

    python bench/refill.py                                  # 10,000 links, 0.1 s, 3,000/min
    python bench/refill.py --links 2000 --latency 0.05
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from linkpool.clock import Clock, ManualClock, SystemClock
from linkpool.config import PoolSettings, QualtricsSettings, Settings
from linkpool.db import create_engine, upgrade
from linkpool.demo import SLOW_PATH_CALLS_PER_LINK
from linkpool.refill import RefillReport, refill
from linkpool.simulator import Simulator
from linkpool.store import Store

SURVEY = "SV_SimSurvey0001"


def provision(
    links: int,
    list_size: int,
    *,
    clock: Clock,
    latency: float = 0.0,
    rpm: int = 3000,
    concurrency: int = 4,
) -> tuple[RefillReport, float]:
    """Refill one empty pool up to ``links``; returns the report and the wall time."""
    sim = Simulator(clock=clock, surveys=(SURVEY,))
    sim.faults.latency = latency
    sim.faults.rate_limit_per_minute = rpm
    pool = PoolSettings(
        name="bench",
        survey_id=SURVEY,
        target_available=links,
        low_water=links,
        list_size=list_size,
    )
    settings = Settings(
        qualtrics=QualtricsSettings(
            base_url=sim.base_url,
            directory_id=sim.directory_id,
            requests_per_minute=rpm,
            max_concurrency=concurrency,
        ),
        pools={pool.name: pool},
    )
    with tempfile.TemporaryDirectory() as directory:
        engine = create_engine(f"sqlite:///{Path(directory) / 'bench.db'}")
        upgrade(engine)
        client = sim.client(requests_per_minute=rpm, max_concurrency=concurrency)
        try:
            started = time.perf_counter()
            report = refill(settings, client, Store(engine), clock)
            elapsed = time.perf_counter() - started
        finally:
            client.close()
            engine.dispose()
    stored = report.pools[0].links_added
    if report.exit_code or stored < links:
        raise SystemExit(f"refill did not provision {links} links: {report.to_dict()}")
    return report, elapsed


def calls_per_thousand(list_sizes: list[int], links: int) -> None:
    print(f"## API calls per 1,000 links (provisioning {links:,} links)")
    print()
    print("| list_size | lists | API calls | per 1,000 links | 5-calls-per-recipient path |")
    print("|---:|---:|---:|---:|---:|")
    for size in list_sizes:
        report, _ = provision(links, size, clock=ManualClock())
        pool = report.pools[0]
        calls = sum(pool.api_calls.values())
        slow = pool.links_added * SLOW_PATH_CALLS_PER_LINK
        print(
            f"| {size:,} | {pool.lists_ready} | {calls:,} | "
            f"{calls * 1000 / pool.links_added:.1f} | {slow:,} |"
        )
    print()


def wall_time(links: int, list_size: int, latency: float, rpm: int, concurrency: int) -> None:
    report, elapsed = provision(
        links, list_size, clock=SystemClock(), latency=latency, rpm=rpm, concurrency=concurrency
    )
    pool = report.pools[0]
    calls = sum(pool.api_calls.values())
    latency_bound = calls * latency / concurrency
    rate_bound = calls / (rpm / 60)
    print(
        f"## Wall time: {links:,} links, lists of {list_size:,}, {latency * 1000:.0f} ms per "
        f"call, {rpm:,} requests/minute, {concurrency} in flight"
    )
    print()
    print("| measured | API calls | latency bound | rate-limit bound |")
    print("|---:|---:|---:|---:|")
    print(f"| {elapsed:.1f} s | {calls} | {latency_bound:.1f} s | {rate_bound:.1f} s |")
    print()
    for endpoint, count in sorted(pool.api_calls.items()):
        print(f"- {count:>4}  `{endpoint}`")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--links", type=int, default=10_000)
    parser.add_argument("--list-size", type=int, default=1_000)
    parser.add_argument("--latency", type=float, default=0.1, help="seconds added per call")
    parser.add_argument("--rpm", type=int, default=3000, help="requests per minute")
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    calls_per_thousand([200, 1_000, 5_000, 10_000], args.links)
    wall_time(args.links, args.list_size, args.latency, args.rpm, args.concurrency)


if __name__ == "__main__":
    main()
