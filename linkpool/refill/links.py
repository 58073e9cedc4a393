"""Reading a distribution's links into the rows refill stores, with both contact ids per link.

The links listing's ``contactId`` may be the list entry (``CGC_…``, as Qualtrics' own example
shows and a production pool saw) rather than the directory contact (``CID_…``) that a
write-back addresses. Each link keeps both: the ``CGC_`` (from the listing or the ``Q_DL`` of its
URL) and the ``CID_``, found when needed by one pass over the list's contacts matched by
``extRef`` (``ceil(list_size / 50)`` calls, once per list).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from linkpool.clock import utc
from linkpool.qualtrics.client import (
    CONTACT_PREFIX,
    LOOKUP_PREFIX,
    QualtricsClient,
    is_qualtrics_id,
)
from linkpool.store import NewLink

logger = logging.getLogger("linkpool.refill")

_LOOKUP_ID = re.compile(r"(CGC_[A-Za-z0-9]+)")


def links_of(
    elements: Iterable[Mapping[str, Any]], slots: set[str], default_expiry: datetime | None
) -> tuple[list[NewLink], int]:
    """The usable links among listing ``elements`` for a list's ``slots``, and how many were
    skipped for contact frequency. ``contact_id`` is still as the listing gave it."""
    links: list[NewLink] = []
    seen: set[str] = set()
    skipped = 0
    for element in elements:
        slot = element.get("externalDataReference")
        if not isinstance(slot, str) or slot not in slots or slot in seen:
            continue
        seen.add(slot)
        if element.get("exceededContactFrequency"):
            skipped += 1
            continue
        link = _link_of(element, slot, default_expiry)
        if link is not None:
            links.append(link)
    return links, skipped


def _link_of(
    element: Mapping[str, Any], slot: str, default_expiry: datetime | None
) -> NewLink | None:
    url, contact_id = element.get("link"), element.get("contactId")
    if not isinstance(url, str) or not url or not is_qualtrics_id(contact_id):
        return None
    expires_at = parse_time(element.get("linkExpiration")) or default_expiry
    if expires_at is None:
        return None  # a distributed list always has its expiry; a link without one is unusable
    return NewLink(
        ext_ref=slot,
        contact_id=contact_id,
        contact_lookup_id=lookup_id_of(url, contact_id),
        url=url,
        expires_at=expires_at,
    )


def lookup_id_of(url: str, contact_id: str) -> str | None:
    """The link's list entry: the listing's ``contactId`` if it is one, else the ``CGC_``
    that ends the URL's ``Q_DL``."""
    if contact_id.startswith(LOOKUP_PREFIX):
        return contact_id
    match = _LOOKUP_ID.search(url)
    return match.group(1) if match else None


def with_directory_contacts(
    client: QualtricsClient, mailing_list_id: str, links: list[NewLink]
) -> list[NewLink]:
    """``links`` with each ``contact_id`` the directory contact (``CID_``). Costs nothing when
    the listing gave ``CID_`` ids; else one pass over the list's contacts. A link whose
    contact is not found keeps the listing's id (sync looks it up again)."""
    if all(link.contact_id.startswith(CONTACT_PREFIX) for link in links):
        return links
    by_ext_ref = client.contact_ids_by_ext_ref(mailing_list_id)
    resolved = []
    for link in links:
        contact_id = by_ext_ref.get(link.ext_ref)
        if contact_id is None and not link.contact_id.startswith(CONTACT_PREFIX):
            logger.warning(
                "mailing list %s: no member with extRef %s; its write-back will look again",
                mailing_list_id,
                link.ext_ref,
            )
        resolved.append(replace(link, contact_id=contact_id) if contact_id else link)
    return resolved


def parse_time(value: Any) -> datetime | None:
    """Qualtrics times: ISO 8601 with ``Z``, or ``YYYY-MM-DD HH:MM:SS`` (UTC)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return utc(datetime.fromisoformat(value.replace("Z", "+00:00")))
    except ValueError:
        return None


__all__: list[str] = []  # internal to linkpool.refill
