"""The directory's 10,000-list ceiling, as refill sees it: a listing cap, not an error.

Qualtrics says a directory "can only return 10,000 mailing lists at a time". Creating more is
not documented to fail, but beyond it the listing no longer shows every list, so a lost
create can no longer be settled by looking the list up by name. Refill therefore counts the
listing once per run, when a pool first wants new lists, and plans none that would bring it
within ``[qualtrics] list_headroom`` of the cap.
"""

from __future__ import annotations

import threading

from linkpool.errors import LinkPoolError
from linkpool.qualtrics.client import QualtricsClient
from linkpool.qualtrics.endpoints import MAILING_LIST_LISTING_CAP


class NearListCeiling(LinkPoolError):
    """The directory is near the 10,000 lists its listing can show: no new list is planned."""


class ListCeiling:
    """How many more lists this run may create in the directory. Thread-safe: pools share it."""

    def __init__(self, client: QualtricsClient, headroom: int) -> None:
        self.client = client
        self.limit = MAILING_LIST_LISTING_CAP - headroom
        self._listed: int | None = None
        self._lock = threading.Lock()

    def reserve(self, wanted: int) -> int:
        """Reserve up to ``wanted`` lists; raises NearListCeiling when none is left."""
        with self._lock:
            if self._listed is None:
                self._listed = self.client.count_mailing_lists()
            granted = max(0, min(wanted, self.limit - self._listed))
            self._listed += granted
            listed = self._listed - granted
        if not granted:
            raise NearListCeiling(
                f"the directory's listing shows {listed} mailing lists, within list_headroom "
                f"of the {MAILING_LIST_LISTING_CAP:,} Qualtrics lists at a time: refill creates "
                "no new list (a lost create could no longer be found by name). Let gc delete "
                "expired lists, delete lists you no longer need, or use another directory"
            )
        return granted


__all__ = ["ListCeiling", "NearListCeiling"]
