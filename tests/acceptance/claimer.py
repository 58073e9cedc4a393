"""A claiming application, for running in its own process from the acceptance tests.

    python -m tests.acceptance.claimer CONFIG POOL WORKER COUNT OUTPUT

Claims ``COUNT`` links of ``POOL`` through the library, as an application would, pausing a few
milliseconds between claims, and writes one JSON line per attempt to ``OUTPUT``: the claim, or
the error with the pool's claimable count read right after it.
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path
from typing import Any

from linkpool import LinkPool, LinkPoolError

MAX_PAUSE = 0.15
"""Seconds at most between two claims: the claims of one process span a couple of seconds."""


def attempt(pool: LinkPool, name: str, recipient: str) -> dict[str, Any]:
    try:
        claim = pool.claim(name, recipient=recipient, key=f"key-{recipient}")
    except LinkPoolError as exc:
        return {
            "ok": False,
            "recipient": recipient,
            "error": type(exc).__name__,
            "message": str(exc),
            "claimable_after": pool.counts(name).claimable,
        }
    return {
        "ok": True,
        "recipient": recipient,
        "link_id": claim.link_id,
        "url": claim.url,
        "expires_at": claim.expires_at.isoformat(),
    }


def main(config: str, name: str, worker: str, count: str, output: str) -> None:
    rng = random.Random(worker)
    with LinkPool.from_config(config) as pool, Path(output).open("w") as out:
        for n in range(int(count)):
            record = attempt(pool, name, f"w{worker}-{n}")
            out.write(json.dumps(record) + "\n")
            out.flush()
            time.sleep(rng.uniform(0, MAX_PAUSE))


if __name__ == "__main__":
    main(*sys.argv[1:])
