"""A client process claiming over HTTP until the pool is exhausted (the acceptance tests').

    python -m tests.acceptance.http_claimer BASE_URL API_KEY POOL WORKER SHARED_KEYS OUTPUT

Claims with a key of its own each time, and also with each of the ``SHARED_KEYS`` keys that
every worker uses (``shared-0`` … with the same recipient): those must give one link each.
Writes one JSON line per answer to OUTPUT.
"""

from __future__ import annotations

import json
import sys

from linkpool.errors import PoolExhausted
from linkpool.remote import RemotePool


def main(base_url: str, api_key: str, pool: str, worker: str, shared: int, output: str) -> None:
    lines = []
    with RemotePool(base_url, api_key=api_key) as remote:
        for n in range(shared):
            claim = remote.claim(pool, recipient=f"shared-{n}", key=f"shared-{n}")
            lines.append({"link_id": claim.link_id, "key": claim.key, "replayed": claim.replayed})
        n = 0
        while True:
            try:
                claim = remote.claim(pool, recipient=f"w{worker}-{n}", key=f"w{worker}-{n}")
            except PoolExhausted:
                break
            lines.append({"link_id": claim.link_id, "key": claim.key, "replayed": claim.replayed})
            n += 1
    with open(output, "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(line) + "\n" for line in lines)


if __name__ == "__main__":
    base, key, name, worker_id, shared_keys, path = sys.argv[1:]
    main(base, key, name, worker_id, int(shared_keys), path)
