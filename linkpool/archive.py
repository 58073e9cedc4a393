"""``linkpool archive``: move old claims of deleted lists out of the hot table into a file.

Claims are kept forever by default. Teams that must not keep personal data past a retention
period archive the claims of lists gc has deleted (their links are dead) made before a cutoff:

1. the claims are written, ordered by link id, to ``FILE.partial`` (gzip'd JSON lines or CSV),
   which is flushed and fsync'd, then renamed to ``FILE`` (and the directory fsync'd);
2. the link ids are read back from ``FILE`` and those rows deleted in one transaction.

A run killed before the rename leaves no ``FILE`` (the next run rewrites ``.partial``); killed
after it, ``FILE`` holds every claim and the next run with the same ``--output`` only finishes
the delete. A second run after a complete one changes nothing. ``FILE`` is never overwritten.
The pool's counts do not change (deleted lists are counted from ``closed_list_totals``), but
archived claims leave ``linkpool export`` and ``claim_by_key``: they live in the file now.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from linkpool.errors import InvalidArgument, LinkPoolError
from linkpool.export import COLUMNS, claim_record
from linkpool.store import Store

ARCHIVE_FORMATS = ("jsonl", "csv")
ARCHIVE_COLUMNS = ("link_id", "pool", *COLUMNS)
DELETE_BATCH = 1000


@dataclass(frozen=True)
class ArchiveResult:
    path: Path
    written: int  # claims written into the file by this run
    removed: int  # rows deleted from the database by this run
    existed: bool = False  # the file was there: this run only finished its delete

    def summary(self) -> str:
        if self.existed:
            return (
                f"{self.path} exists: removed the {self.removed} claim(s) it holds that were "
                "still in the database; to archive more, choose another --output"
            )
        if not self.written:
            return "nothing to archive: no claims of deleted lists before the cutoff"
        return f"archived {self.written} claim(s) to {self.path}; removed {self.removed}"


def archive(store: Store, *, before: datetime, path: Path, fmt: str = "jsonl") -> ArchiveResult:
    """Archive the claims of deleted lists made before ``before`` into ``path`` (see above)."""
    if fmt not in ARCHIVE_FORMATS:
        raise InvalidArgument(f"--format {fmt!r}: choose one of {', '.join(ARCHIVE_FORMATS)}")
    if path.exists():
        return ArchiveResult(path, 0, remove_archived(store, path, fmt), existed=True)
    written = write_archive(store, before=before, path=path, fmt=fmt)
    if not written:
        return ArchiveResult(path, 0, 0)
    return ArchiveResult(path, written, remove_archived(store, path, fmt))


def remove_archived(store: Store, path: Path, fmt: str) -> int:
    """Delete, in one transaction, the claims whose ids the archive file holds."""
    return store.delete_archived(batches(read_ids(path, fmt), DELETE_BATCH))


def write_archive(store: Store, *, before: datetime, path: Path, fmt: str) -> int:
    """Write the claims into ``path`` durably (fsync, atomic rename); 0 and no file if none."""
    partial = path.with_name(path.name + ".partial")
    try:
        raw = open(partial, "wb")  # noqa: SIM115 - closed below, after its fsync
    except OSError as exc:
        raise LinkPoolError(f"cannot write {partial}: {exc.strerror or exc}") from None
    try:
        with raw:
            with gzip.GzipFile(fileobj=raw, mode="wb") as compressed:
                text = io.TextIOWrapper(compressed, encoding="utf-8", newline="")
                count = write_records(store.iter_archivable(before=before), text, fmt)
                text.flush()
                text.detach()
            raw.flush()
            os.fsync(raw.fileno())
        if not count:
            partial.unlink()
            return 0
        os.replace(partial, path)
        fsync_directory(path.resolve().parent)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return count


def write_records(rows: Iterator[Any], stream: IO[str], fmt: str) -> int:
    writer = csv.DictWriter(stream, fieldnames=ARCHIVE_COLUMNS) if fmt == "csv" else None
    if writer is not None:
        writer.writeheader()
    count = 0
    for row in rows:
        record = {"link_id": row.link_id, "pool": row.pool, **claim_record(row)}
        if writer is None:
            stream.write(json.dumps(record, sort_keys=True, ensure_ascii=False) + "\n")
        else:
            if record["data"] is not None:
                record["data"] = json.dumps(record["data"], sort_keys=True)
            writer.writerow(record)
        count += 1
    return count


def read_ids(path: Path, fmt: str) -> Iterator[int]:
    """The link ids an archive holds, streamed; a file that is not one is refused."""
    try:
        with gzip.open(path, "rt", encoding="utf-8", newline="") as stream:
            if fmt == "csv":
                for record in csv.DictReader(stream):
                    yield int(record["link_id"])
            else:
                for line in stream:
                    yield int(json.loads(line)["link_id"])
    except (OSError, EOFError, ValueError, KeyError, TypeError) as exc:
        raise InvalidArgument(
            f"--output {path} exists and is not a linkpool archive in {fmt} format ({exc}); "
            "choose another file (an archive is never overwritten)"
        ) from None


def batches(values: Iterator[int], size: int) -> Iterator[list[int]]:
    batch: list[int] = []
    for value in values:
        batch.append(value)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (POSIX: fsync the directory itself)."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
