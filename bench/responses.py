"""The API cost of putting claim data where the responses are, against the simulator.

For ``--claims`` answered claims (all answered), in one run, each on a fresh simulator and a
SQLite file, counted by the client's call tally (every attempt):

Calls are the client's own count (``client.calls``: every attempt of the run, on a client used
for nothing else), so checks a job makes outside its report's tally count too.

- ``contact`` enrichment: ``linkpool sync`` writes every claim onto its placeholder contact,
  one ``PUT …/contacts/{id}`` each (what it costs before the respondent opens the link);
- ``response`` enrichment: one ``linkpool responses`` run exports the responses (tracking) and
  puts the data on them in bulk ``update-responses`` jobs of ``[responses] batch_size``.

A manual clock: the counts do not depend on time; wall time is reported beside them.

    python bench/responses.py                 # 1,000 answered claims
    python bench/responses.py --claims 10000

"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import Counter
from pathlib import Path

from linkpool.clock import ManualClock
from linkpool.config import PoolSettings, QualtricsSettings, Settings
from linkpool.db import create_engine, upgrade
from linkpool.pool import LinkPool
from linkpool.refill import refill
from linkpool.responses import track_responses
from linkpool.simulator import Simulator
from linkpool.store import Store
from linkpool.sync import sync

SURVEY = "SV_SimSurvey0001"


def answered_pool(
    directory: Path, claims: int, enrichment: str
) -> tuple[Simulator, Settings, Store, ManualClock]:
    """A pool of ``claims`` links, all claimed (with data), all answered."""
    clock = ManualClock()
    sim = Simulator(clock=clock, surveys=(SURVEY,))
    pool = PoolSettings(
        name="bench",
        survey_id=SURVEY,
        target_available=claims,
        low_water=claims,
        list_size=min(claims, 1000),
        enrichment=enrichment,
    )
    url = f"sqlite:///{directory / f'{enrichment}.db'}"
    settings = Settings(
        database_url=url,
        qualtrics=QualtricsSettings(base_url=sim.base_url, directory_id=sim.directory_id),
        pools={pool.name: pool},
    )
    engine = create_engine(url)
    upgrade(engine)
    store = Store(engine)
    with sim.client() as client:
        refill(settings, client, store, clock)
    lp = LinkPool.from_settings(settings, clock=clock, engine=engine)
    for n in range(claims):
        claim = lp.claim("bench", recipient=f"cust-{n}", data={"order": f"A-{n}", "store": n % 50})
        sim.respond(claim.url)
    return sim, settings, store, clock


def measure(claims: int, enrichment: str) -> tuple[Counter[str], float]:
    with tempfile.TemporaryDirectory() as directory:
        sim, settings, store, clock = answered_pool(Path(directory), claims, enrichment)
        with sim.client() as client:
            started = time.perf_counter()
            if enrichment == "contact":
                written = sync(settings, client, store, clock)
                assert written.written == claims, written.to_dict()
            else:
                tracked = track_responses(settings, client, store, clock)
                assert tracked.answered == tracked.enriched == claims, tracked.to_dict()
            elapsed = time.perf_counter() - started
            calls = Counter(client.calls)  # a fresh client: every call of the run
        store.engine.dispose()
    return calls, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--claims", type=int, default=1000)
    args = parser.parse_args()
    print(f"{args.claims} answered claims\n")
    print("| enrichment | API calls | by endpoint | wall time |")
    print("|---|---:|---|---:|")
    for enrichment in ("contact", "response"):
        calls, elapsed = measure(args.claims, enrichment)
        detail = ", ".join(f"{key} × {count}" for key, count in sorted(calls.items()))
        print(f"| `{enrichment}` | {sum(calls.values())} | {detail} | {elapsed:.2f} s |")


if __name__ == "__main__":
    main()
