"""Reading a response export without holding it in memory.

The export is a zip holding one JSON document ``{"responses": [...]}``. The zip is spooled to a
temporary file (in memory while small, on disk beyond ``SPOOL_IN_MEMORY``), its member is read
as a stream, and ``ijson`` yields one response element at a time: an export of 100,000
responses costs the memory of one element.
"""

from __future__ import annotations

import logging
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any

import ijson

from linkpool.errors import QualtricsError
from linkpool.qualtrics.client import is_qualtrics_id

logger = logging.getLogger(__name__)
SPOOL_IN_MEMORY = 8 * 1024 * 1024


@dataclass(frozen=True)
class ExportedResponse:
    """One response of an export: what the join needs, and its values (embedded data among
    them) to tell whether our data is already on it."""

    response_id: str
    ext_ref: str | None
    finished: bool
    recorded_at: datetime | None
    values: dict[str, Any] = field(repr=False)


def iter_export(spool: IO[bytes]) -> Iterator[ExportedResponse]:
    """The responses of a zipped JSON export, one at a time."""
    spool.seek(0)
    try:
        archive = zipfile.ZipFile(spool)
    except zipfile.BadZipFile:
        raise QualtricsError("the response export file is not a zip archive") from None
    with archive:
        members = [info for info in archive.infolist() if info.filename.endswith(".json")]
        if len(members) != 1:
            raise QualtricsError(
                f"the response export zip holds {len(members)} JSON files, expected one"
            )
        with archive.open(members[0]) as document:
            try:
                for element in ijson.items(document, "responses.item", use_float=True):
                    response = parse_element(element)
                    if response is not None:
                        yield response
            except ijson.JSONError as exc:
                raise QualtricsError(f"the response export is not valid JSON: {exc}") from None


def parse_element(element: Any) -> ExportedResponse | None:
    """The response, or None (with a warning) for one whose ``responseId`` is not an id
    (``QUALTRICS_ID``): linkpool cannot store it, and failing the whole export for it would
    stop tracking at that response for good, run after run."""
    if not isinstance(element, dict) or not isinstance(element.get("responseId"), str):
        raise QualtricsError("a response in the export has no responseId")
    if not is_qualtrics_id(element["responseId"]):
        logger.warning("a response in the export has a responseId that is not an id: skipped")
        return None
    values = element.get("values")
    values = values if isinstance(values, dict) else {}
    ext_ref = values.get("externalDataReference")
    return ExportedResponse(
        response_id=element["responseId"],
        ext_ref=ext_ref if isinstance(ext_ref, str) and ext_ref else None,
        finished=_flag(values.get("finished")),
        recorded_at=parse_time(values.get("recordedDate")),
        values=values,
    )


def _flag(value: Any) -> bool:
    """``finished`` is 1/0 in JSON exports (True/False with labels)."""
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true")
    return bool(value)


def parse_time(value: Any) -> datetime | None:
    """Qualtrics' ISO 8601 UTC times (``2026-11-22T09:00:00Z``, maybe with fractions)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


__all__ = ["SPOOL_IN_MEMORY", "ExportedResponse", "iter_export", "parse_time"]
