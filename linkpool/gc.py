"""``linkpool gc``: the reaper.

Deletes on Qualtrics what can no longer serve anyone, so a directory never approaches its
10,000-list ceiling, and never breaks a link someone may still open:

- a list whose links expired (distribution expiry + ``[gc] grace``): its distribution, then its
  mailing list; its unclaimed links become void, its claims stay (they are the audit trail);
- lists provisioning left failed or stuck half-made (refill normally cleans them up);
- available links with less than ``min_remaining`` left are voided, so counts stay honest.

**The invariant**: gc never deletes a list or distribution holding a claimed link that has not
expired. The candidate queries exclude such lists, ``Store.begin_reaping`` voids a list's
unclaimed links and re-checks its claims in one transaction (so no claim can slip in after), and
the claims are counted once more right before every delete.

Crash safety: a list moves ``reaping`` → ``distribution_deleted`` → ``deleted``, each step
recorded after its API call; a later gc finishes lists it finds half-reaped. A delete answering
404 counts as done, which also covers a delete whose answer was lost and was retried.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any

from linkpool.clock import Clock
from linkpool.config import DEFAULT_LIST_PREFIX, Settings
from linkpool.errors import AuthError, Interrupted, NotFound, QualtricsError
from linkpool.job import JobContext, JobReport
from linkpool.lease import Lease
from linkpool.models import ListState
from linkpool.qualtrics.client import QualtricsClient
from linkpool.refill import list_name_prefix, refill_lease_name
from linkpool.store import ListRecord, Store

logger = logging.getLogger("linkpool.gc")

LEASE_NAME = "gc"
STALE_AFTER = timedelta(hours=1)
"""A list still in a provisioning state this long after its last step is taken as abandoned."""

_REAPING = (ListState.REAPING, ListState.DISTRIBUTION_DELETED)


@dataclass(frozen=True)
class ListAction:
    """One list gc deleted (or, in a dry run, would delete), and why."""

    list_id: int
    pool: str
    name: str
    mailing_list_id: str | None
    distribution_id: str | None
    reason: str  # "expired", "failed", "stale" (stuck provisioning) or "resumed"

    @classmethod
    def from_row(cls, row: ListRecord, reason: str) -> ListAction:
        return cls(
            list_id=row.id,
            pool=row.pool,
            name=row.name,
            mailing_list_id=row.mailing_list_id,
            distribution_id=row.distribution_id,
            reason=reason,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class GcReport(JobReport):
    dry_run: bool = False
    lists: list[ListAction] = field(default_factory=list)
    lists_deleted: int = 0
    links_voided: int = 0
    contacts_purged: int = 0
    api_calls: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)

    def summary_parts(self) -> list[str]:
        return [
            f"lists deleted {self.lists_deleted}",
            f"links voided {self.links_voided}",
            f"contacts purged {self.contacts_purged}",
        ]


class GcJob:
    """``gc`` as a scheduled job."""

    name = "gc"
    lock = LEASE_NAME
    default_interval = timedelta(hours=1)

    def run(self, context: JobContext, stop: threading.Event) -> GcReport:
        return collect(
            context.settings, context.require_client(), context.store, context.clock, stop=stop
        )


GC_JOB = GcJob()


class _Refused(Exception):
    """A list turned out to hold an unexpired claim right before a delete: leave it alone."""


def collect(
    settings: Settings,
    client: QualtricsClient,
    store: Store,
    clock: Clock,
    dry_run: bool = False,
    *,
    stale_after: timedelta = STALE_AFTER,
    stop: threading.Event | None = None,
) -> GcReport:
    """Run one gc. ``dry_run`` reports what would be deleted and voided and touches nothing.
    Once ``stop`` is set, gc ends before the next list (the next run takes the rest).

    Raises LeaseHeld when another gc is running, LeaseLost if one takes over meanwhile.
    """
    report = GcReport(dry_run=dry_run)
    if not dry_run:
        client.verify_host()
    with client.tally(report.api_calls):
        if dry_run:
            _Reaper(settings, client, store, clock, report, stale_after=stale_after).plan()
            return report
        with Lease(store, LEASE_NAME, clock) as lease, client.guarded(lease.check):
            fenced = store.fenced(lease.fence())
            reaper = _Reaper(
                settings, client, fenced, clock, report, stale_after=stale_after, stop=stop
            )
            reaper.run(lease)
    return report


class _Reaper:
    def __init__(
        self,
        settings: Settings,
        client: QualtricsClient,
        store: Store,
        clock: Clock,
        report: GcReport,
        *,
        stale_after: timedelta,
        stop: threading.Event | None = None,
    ) -> None:
        self.settings = settings
        self.client = client
        self.store = store
        self.clock = clock
        self.report = report
        self.stale_after = stale_after
        self.stop = stop or threading.Event()
        # One "now" for the whole run: a claim counts as live if it is unexpired at the start,
        # which is the stricter reading as time moves on during the run.
        self.now = clock.now()
        # Settings built in code may leave out [qualtrics]: their lists have the default prefix.
        qualtrics = settings.qualtrics
        self.list_prefix = qualtrics.list_prefix if qualtrics else DEFAULT_LIST_PREFIX
        self._directory: dict[str, str] | None = None
        self._distributions: dict[str, list[dict[str, Any]]] = {}

    # --- deciding ---------------------------------------------------------------------------

    def plan(self) -> None:
        for pool in self.settings.pools.values():
            cutoff = self.now + pool.min_remaining
            self.report.links_voided += self.store.unclaimable_links(pool.name, cutoff=cutoff)
        self.report.lists.extend(
            ListAction.from_row(row, reason) for row, reason in self.candidates()
        )

    def candidates(self) -> Iterator[tuple[ListRecord, str]]:
        """Lists to delete, once each: half-reaped ones first, then expired, then abandoned."""
        seen: set[int] = set()
        grace = self.settings.gc.grace
        groups: list[Iterable[tuple[ListRecord, str]]] = [
            ((row, "resumed") for row in self.store.lists_being_reaped(now=self.now)),
            (
                (row, "expired")
                for row in self.store.expired_lists(now=self.now, expired_before=self.now - grace)
            ),
            self.abandoned(),
        ]
        for group in groups:
            for row, reason in group:
                if row.id not in seen:
                    seen.add(row.id)
                    yield row, reason

    def abandoned(self) -> Iterator[tuple[ListRecord, str]]:
        rows = self.store.abandoned_lists(now=self.now, stale_before=self.now - self.stale_after)
        for row in rows:
            if self.store.lease_holder(refill_lease_name(row.pool), now=self.now):
                logger.info("list %s: its pool's refill is running; left to it", row.id)
                continue
            yield row, "failed" if row.state == ListState.FAILED else "stale"

    # --- acting -----------------------------------------------------------------------------

    def run(self, lease: Lease) -> None:
        for pool in self.settings.pools.values():
            cutoff = self.now + pool.min_remaining
            self.report.links_voided += self.store.void_unclaimable_links(
                pool.name, cutoff=cutoff, now=self.clock.now()
            )
        for row, reason in list(self.candidates()):
            if self.stop.is_set():
                return
            lease.check()
            self.reap_reporting_errors(row, reason)

    def reap_reporting_errors(self, row: ListRecord, reason: str) -> None:
        if reason in ("failed", "stale"):
            with self.refill_lease(row) as held:
                if held:
                    self.reap_and_report(row, reason)
                else:
                    logger.info("list %s: its pool's refill is running; left to it", row.id)
        else:
            self.reap_and_report(row, reason)

    @contextmanager
    def refill_lease(self, row: ListRecord) -> Iterator[bool]:
        """Hold the pool's refill lease (if free), so that no refill resumes the list as we
        delete it: heartbeat, API calls and writes fenced by it too. Yields whether held."""
        refill = Lease(self.store, refill_lease_name(row.pool), self.clock)
        if not refill.acquire():
            yield False
            return
        refill.start_heartbeat()
        gc_store = self.store
        self.store = gc_store.fenced(refill.fence())
        try:
            with self.client.guarded(refill.check):
                yield True
        finally:
            self.store = gc_store
            refill.release()

    def reap_and_report(self, row: ListRecord, reason: str) -> None:
        label = f"list {row.id} ({row.mailing_list_id or row.name})"
        try:
            if self.reap(row):
                self.report.lists.append(ListAction.from_row(row, reason))
                self.report.lists_deleted += 1
                logger.info("%s deleted (%s)", label, reason)
        except _Refused as exc:
            logger.error("%s: %s", label, exc)
            self.report.errors.append(f"{label}: {exc}")
        except AuthError:
            raise
        except Interrupted:
            logger.info("%s: stopped; the next gc resumes it", label)
        except QualtricsError as exc:
            logger.warning("%s: gc will retry it: %s", label, exc)
            self.report.errors.append(f"{label}: {exc}")
            self.store.update_list(row.id, now=self.clock.now(), last_error=str(exc))

    def reap(self, row: ListRecord) -> bool:
        """Take one list through reaping → distribution_deleted → deleted; False if it
        changed state meanwhile or gained a claim (then nothing was touched)."""
        list_id, state = row.id, row.state
        if state not in _REAPING:
            voided = self.store.begin_reaping(list_id, state=state, now=self.clock.now())
            if voided is None:
                logger.info("list %s changed meanwhile or holds a live claim; skipped", list_id)
                return False
            self.report.links_voided += voided
            state = ListState.REAPING
        if state == ListState.REAPING:
            self.delete_distribution(row)
            self.store.update_list(
                list_id, now=self.clock.now(), state=ListState.DISTRIBUTION_DELETED
            )
        if self.settings.gc.purge_contacts:
            self.purge_contacts(row)
        self.delete_mailing_list(row)
        self.store.close_list(list_id, now=self.clock.now())
        return True

    def guard(self, row: ListRecord) -> None:
        """The invariant, checked once more right before a delete."""
        live = self.store.live_claims(row.id, now=self.now)
        if live:
            raise _Refused(
                f"refused to delete: it holds {live} claimed link(s) that have not expired"
            )

    def delete_distribution(self, row: ListRecord) -> None:
        distribution_id = row.distribution_id or self.find_distribution(row)
        if distribution_id is not None:
            self.guard(row)
            _delete(self.client.delete_distribution, distribution_id)

    def delete_mailing_list(self, row: ListRecord) -> None:
        mailing_list_id = row.mailing_list_id or self.directory().get(row.name)
        if mailing_list_id is not None:
            self.guard(row)
            _delete(self.client.delete_mailing_list, mailing_list_id)

    def purge_contacts(self, row: ListRecord) -> None:
        """Remove the list's placeholders from the directory (one rate-limited call each)."""
        known = self.store.placeholder_contact_ids(row.id)
        if not known:
            self.purge_unrecorded_contacts(row)
            return
        for contact_id in known:
            _delete(self.client.delete_directory_contact, contact_id)  # guarded by the lease
            self.report.contacts_purged += 1

    def purge_unrecorded_contacts(self, row: ListRecord) -> None:
        """A list abandoned before its links were stored: its contacts are known only to its
        mailing list on Qualtrics, read there before the list is deleted."""
        mailing_list_id = row.mailing_list_id or self.directory().get(row.name)
        if mailing_list_id is None:
            return
        try:
            self.report.contacts_purged += self.client.purge_list_contacts(mailing_list_id)
        except NotFound:
            pass  # the list is gone, and with it the way to its contacts

    # --- finding what a lost answer left unrecorded ---------------------------------------

    def directory(self) -> dict[str, str]:
        """Our lists in the directory, name → id (read once per run, when first needed)."""
        if self._directory is None:
            self._directory = {
                element["name"]: element["mailingListId"]
                for element in _named_with(self.client, list_name_prefix(self.list_prefix))
            }
        return self._directory

    def find_distribution(self, row: ListRecord) -> str | None:
        """A distribution created for the list whose creation answer was lost, if any."""
        mailing_list_id = row.mailing_list_id
        if mailing_list_id is None:
            return None  # without a list there cannot be a distribution for it
        survey_id = row.survey_id
        if survey_id not in self._distributions:
            try:
                self._distributions[survey_id] = list(self.client.iter_distributions(survey_id))
            except NotFound:
                self._distributions[survey_id] = []
        for element in self._distributions[survey_id]:
            recipients = element.get("recipients") or {}
            if (
                recipients.get("mailingListId") == mailing_list_id
                or element.get("description") == row.name
            ):
                return str(element["id"])
        return None


def _named_with(client: QualtricsClient, prefix: str) -> Iterator[dict[str, Any]]:
    """The directory's mailing lists whose names begin with ``prefix``."""
    for element in client.iter_mailing_lists():
        if str(element.get("name", "")).startswith(prefix):
            yield element


def _delete(delete: Callable[[str], None], resource_id: str) -> None:
    """A delete that treats 404 as done: a lost answer, a retry, or an earlier gc."""
    try:
        delete(resource_id)
    except NotFound:
        logger.info("%s was already gone", resource_id)


# --- orphans ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Orphan:
    mailing_list_id: str
    name: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass
class OrphanReport(JobReport):
    orphans: list[Orphan] = field(default_factory=list)
    deleted: int = 0
    api_calls: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)

    def summary_parts(self) -> list[str]:
        return [f"{len(self.orphans)} orphan list(s)", f"deleted {self.deleted}"]


def find_orphans(client: QualtricsClient, store: Store, *, list_prefix: str) -> list[Orphan]:
    """Lists in the directory named with ``list_prefix`` (``[qualtrics] list_prefix``) that the
    database does not know. Lists of another installation, with a prefix of its own, are not
    ours and never reported.

    A list the database names but has no id for yet (a refill between its create call and
    recording the answer) is known by name, so it is never reported.
    """
    known_ids, known_names = store.known_mailing_lists()
    return [
        Orphan(mailing_list_id=element["mailingListId"], name=element["name"])
        for element in _named_with(client, list_name_prefix(list_prefix))
        if element["mailingListId"] not in known_ids and element["name"] not in known_names
    ]


def delete_orphans(
    client: QualtricsClient, store: Store, clock: Clock, orphans: Iterable[Orphan]
) -> OrphanReport:
    """Delete the given orphan lists, under the gc lease, re-checking each is still unknown."""
    report = OrphanReport(orphans=list(orphans))
    with (
        client.tally(report.api_calls),
        Lease(store, LEASE_NAME, clock) as lease,
        client.guarded(lease.check),
    ):
        for orphan in report.orphans:
            lease.check()
            known_ids, known_names = store.known_mailing_lists()
            if orphan.mailing_list_id in known_ids or orphan.name in known_names:
                continue
            try:
                _delete(client.delete_mailing_list, orphan.mailing_list_id)
            except AuthError:
                raise
            except QualtricsError as exc:
                report.errors.append(f"orphan {orphan.mailing_list_id}: {exc}")
            else:
                report.deleted += 1
    return report


__all__ = [
    "GC_JOB",
    "GcJob",
    "GcReport",
    "ListAction",
    "Orphan",
    "OrphanReport",
    "collect",
    "delete_orphans",
    "find_orphans",
]
