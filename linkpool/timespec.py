"""Points in time given on the command line: ``--since`` and ``--before``."""

from __future__ import annotations

from datetime import UTC, datetime

from linkpool.config import parse_duration
from linkpool.errors import InvalidArgument


def parse_instant(text: str, *, now: datetime, option: str) -> datetime:
    """An aware UTC datetime from an ISO 8601 date or time (UTC unless it carries an offset:
    ``2026-11-30``, ``2026-11-30T06:00:00+01:00``, ``2026-11-30 06:00Z``) or from a duration
    back from ``now`` (``24h``, ``90d``)."""
    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidArgument(
            f"{option} {text!r}: give an ISO 8601 date or time (2026-11-30, 2026-11-30T06:00Z; "
            "UTC unless an offset is given) or a duration back from now (24h, 90d)"
        ) from None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)
