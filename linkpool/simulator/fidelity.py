"""How the simulator answers where the evidence about the real API is thin: one switch each.

The defaults follow the strongest evidence (docs/qualtrics-client.md names it per point); the
other settings let a test show that linkpool copes with what a real brand might do instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from linkpool.qualtrics.endpoints import MAILING_LIST_LISTING_CAP

LinksContactId = Literal["lookup", "contact"]


@dataclass(frozen=True)
class Fidelity:
    """The simulator's readings of the real API where it is not documented for certain."""

    links_contact_id: LinksContactId = "lookup"
    """The links listing's ``contactId``: the list entry ``CGC_…`` (``"lookup"``, as Qualtrics'
    own example and a production pool show) or the directory contact ``CID_…``."""

    account_time_zone: str = "America/Chicago"
    """The zone a naive ``expirationDate`` (``YYYY-MM-DD HH:MM:SS``) is read in: the account's
    (a production pool's links expired 6 hours after the UTC time it sent)."""

    proxied_to: str | None = None
    """When set (a host such as ``sjc1.qualtrics.com``), every answer carries the "Request
    proxied" notice naming it, and every POST is refused with 400, as users of a wrong
    datacenter report."""

    notice: str | None = None
    """Any other ``meta.notice`` to put on every answer."""

    unprocessed_as_objects: bool = False
    """The import's 202 lists refused contacts as objects (``{"index": n, …}``), as the
    generated client types them, instead of indexes as the docs say."""

    doubled_slash_links: bool = False
    """The links listing gives URLs as ``https://…qualtrics.com//jfe/form/…`` (seen in
    production). The simulator opens only the normal form."""

    listing_cap: int = MAILING_LIST_LISTING_CAP
    """The directory's mailing-list listing shows at most this many lists (the oldest);
    creating more is not refused."""

    def __post_init__(self) -> None:
        try:
            ZoneInfo(self.account_time_zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {self.account_time_zone!r}") from None
        if self.links_contact_id not in ("lookup", "contact"):
            raise ValueError("links_contact_id must be 'lookup' or 'contact'")
        if self.listing_cap < 1:
            raise ValueError("listing_cap must be at least 1")

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.account_time_zone)


PROXIED_NOTICE = "Request proxied. For faster response times, use this host instead: {host}"


__all__ = ["PROXIED_NOTICE", "Fidelity", "LinksContactId"]
