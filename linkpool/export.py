"""``linkpool export``: the claims of a pool, for joining with survey responses.

Rows stream from the database to the output (``Store.iter_claims``): memory stays flat however
long the ledger. ``since`` keeps claims made at or after a time, so a nightly job exports one
day. Claims moved out by ``linkpool archive`` are in their archive files, not here. A claim
``forget`` erased is still listed (its link stays claimed) with ``erased_at`` set and no
recipient, key or data.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO, cast

from linkpool.errors import LinkPoolError
from linkpool.store import ExportedClaim, Store
from linkpool.store.claims import EXPORT_TEXT_COLUMNS

COLUMNS = EXPORT_TEXT_COLUMNS
FORMATS = ("csv", "json")


def claim_record(row: ExportedClaim) -> dict[str, Any]:
    """One claim as export (and archive) write it: times in ISO 8601, ``data`` parsed."""
    return {
        "claimed_at": row.claimed_at.isoformat(),
        "recipient": row.recipient,
        "key": row.idempotency_key,
        "data": json.loads(row.data) if row.data is not None else None,
        "url": row.url,
        "expires_at": row.expires_at.isoformat(),
        "contact_id": row.contact_id,
        "contact_lookup_id": row.contact_lookup_id,
        "ext_ref": row.ext_ref,
        "mailing_list_id": row.mailing_list_id,
        "distribution_id": row.distribution_id,
        "survey_id": row.survey_id,
        "writeback": row.writeback,
        "erased_at": row.erased_at.isoformat() if row.erased_at else None,
        "response_id": row.response_id,
        "finished": row.response_finished,
        "responded_at": row.responded_at.isoformat() if row.responded_at else None,
    }


def write_claims(
    store: Store,
    pool: str,
    stream: TextIO,
    fmt: str = "csv",
    since: datetime | None = None,
    *,
    answered: bool | None = None,
) -> int:
    """Write the pool's claims to ``stream`` as CSV (lines end with LF; ``data`` as its
    canonical JSON text: compact, keys sorted; ``finished`` as true/false) or as a JSON array
    of objects. ``answered`` True/False keeps only claims with/without a response."""
    if fmt == "csv":
        csv.writer(stream, lineterminator="\n").writerow(COLUMNS)
        return store.copy_csv(pool, since, stream.write, answered=answered)
    if fmt == "json":
        return write_json_array(store.export_rows(pool, since, answered=answered), stream)
    raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")


def write_json_array(batches: Iterator[list[tuple[str | None, ...]]], stream: TextIO) -> int:
    count = 0
    stream.write("[")
    for batch in batches:
        for row in batch:
            record: dict[str, Any] = dict(zip(COLUMNS, row, strict=True))
            if record["data"] is not None:
                record["data"] = json.loads(record["data"])
            if record["finished"] is not None:
                record["finished"] = record["finished"] == "true"
            stream.write(("," if count else "") + "\n  " + json.dumps(record, sort_keys=True))
            count += 1
    stream.write("\n]\n")
    return count


def export_to_file(
    store: Store,
    pool: str,
    path: Path,
    fmt: str = "csv",
    since: datetime | None = None,
    *,
    answered: bool | None = None,
) -> int:
    """Export into ``path`` atomically: a failure leaves no half-written file behind."""
    directory = path.resolve().parent
    try:
        handle = tempfile.NamedTemporaryFile(
            "w", dir=directory, prefix=f".{path.name}.", delete=False, newline="", encoding="utf-8"
        )
    except OSError as exc:
        raise LinkPoolError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        with handle:
            count = write_claims(store, pool, cast(TextIO, handle), fmt, since, answered=answered)
        os.replace(handle.name, path)
    except OSError as exc:  # a full disk, a quota: nothing is left behind
        os.unlink(handle.name)
        raise LinkPoolError(f"cannot write {path}: {exc.strerror or exc}") from None
    except BaseException:
        os.unlink(handle.name)
        raise
    return count
