"""Refill: keep every pool stocked with ready personal links, surviving a crash at any point.

For each pool, under the lease ``refill:<pool>`` (so one process at a time works on a pool):

1. finish or abandon the lists an earlier run left unfinished;
2. if fewer than ``low_water`` links are claimable, provision
   ``ceil((target_available - claimable) / list_size)`` new lists, concurrently.

A list moves planned → list_created → importing → imported → distributed → ready. Its row is
written before and after every API call, so a run that dies anywhere leaves a row saying what may
exist on Qualtrics, and the next run picks up from there:

- ``planned``: the list is looked up by its unique name, and created only if it is not there;
- ``list_created``: the contacts are imported;
- ``importing``: the import is awaited by its stored id. Without an id (the POST's answer was
  lost) or midway through an import of several parts, the list is abandoned;
- ``imported``: the distribution is looked up by its description (the list's name), and created
  only if it is not there;
- ``distributed``: the links are read again.

A POST whose answer was lost (``OutcomeUnknown``) is resolved by the same lookup, never by posting
again. A list that cannot be completed (Qualtrics refused a step, or the lookup found nothing) is
*abandoned*: its distribution and mailing list are deleted on Qualtrics and it is marked failed
(gc retries a deletion that failed). Transient failures (rate limits and 5xx beyond the client's
retries, a lost lease, a crash) leave the list as it is, for the next run to resume.

A list's links become claimable only when the whole list is complete (``Store.finish_list``), so
abandoning an unfinished list never breaks a link that was handed out.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import RowMapping

from linkpool.clock import Clock, utc
from linkpool.config import DEFAULT_LIST_PREFIX, PoolSettings, Settings
from linkpool.errors import (
    BadRequest,
    LinkPoolError,
    NotFound,
    OutcomeUnknown,
    QualtricsError,
    RateLimited,
    UnknownPool,
)
from linkpool.lease import Lease
from linkpool.models import ListState
from linkpool.qualtrics.client import QualtricsClient
from linkpool.qualtrics.endpoints import MAX_IMPORT_BYTES, MAX_IMPORT_CONTACTS
from linkpool.store import Store

logger = logging.getLogger("linkpool.refill")

LEASE_TTL = timedelta(minutes=15)
"""Outlasts the longest step between two renewals: waiting for an import (``IMPORT_TIMEOUT``)."""
IMPORT_TIMEOUT = 600.0
LINKS_WAIT = timedelta(minutes=5)
"""How long to keep re-reading a links listing that has fewer links than the list has contacts."""
LINKS_FIRST_DELAY = 1.0
LINKS_MAX_DELAY = 30.0
MAX_ROUNDS = 3
"""Rounds of planning per run: lists abandoned in one round (a lost answer) are replaced in the
next, while the pool is below ``low_water``."""
LINKS_PAGE_SIZE_GUESS = 100
"""Only for ``--dry-run`` estimates: the links listing's page size is not documented."""

Progress = Callable[[int, int], None]
"""Called with (links done, links planned) across all pools as a refill advances."""

_LOOKUP_ID = re.compile(r"(CGC_[A-Za-z0-9]+)")
_ENDPOINTS = {
    "create_list": "POST /directories/{directoryId}/mailinglists",
    "import": "POST /directories/{directoryId}/mailinglists/{mailingListId}/transactioncontacts",
    "poll_import": (
        "GET /directories/{directoryId}/mailinglists/{mailingListId}/transactioncontacts/{importId}"
    ),
    "distribute": "POST /distributions",
    "links": "GET /distributions/{distributionId}/links",
}


# --- reports ---------------------------------------------------------------------------------


@dataclass
class PoolReport:
    """What a refill did (or, in a dry run, would do) for one pool."""

    pool: str
    claimable_before: int = 0
    claimable_after: int = 0
    lists_resumed: int = 0
    lists_planned: int = 0
    links_planned: int = 0
    lists_created: int = 0
    lists_ready: int = 0
    lists_failed: int = 0
    links_added: int = 0
    shortfall: int = 0
    api_calls: Counter[str] = field(default_factory=Counter)
    duration_s: float = 0.0
    errors: list[str] = field(default_factory=list)
    skipped: str | None = None

    @property
    def failed(self) -> bool:
        return bool(self.errors)

    def to_dict(self) -> dict[str, Any]:
        return {
            "claimable_before": self.claimable_before,
            "claimable_after": self.claimable_after,
            "lists_resumed": self.lists_resumed,
            "lists_planned": self.lists_planned,
            "links_planned": self.links_planned,
            "lists_created": self.lists_created,
            "lists_ready": self.lists_ready,
            "lists_failed": self.lists_failed,
            "links_added": self.links_added,
            "shortfall": self.shortfall,
            "api_calls": dict(sorted(self.api_calls.items())),
            "duration_s": round(self.duration_s, 3),
            "errors": list(self.errors),
            "skipped": self.skipped,
        }


@dataclass
class RefillReport:
    pools: list[PoolReport]
    dry_run: bool = False
    duration_s: float = 0.0

    @property
    def exit_code(self) -> int:
        """1 if any pool failed, else 0 (a pool skipped as already running is not a failure)."""
        return 1 if any(pool.failed for pool in self.pools) else 0

    @property
    def api_calls(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for pool in self.pools:
            total.update(pool.api_calls)
        return total

    def to_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "pools": {pool.pool: pool.to_dict() for pool in self.pools},
            "api_calls": dict(sorted(self.api_calls.items())),
            "duration_s": round(self.duration_s, 3),
            "exit_code": self.exit_code,
        }


# --- the rules -------------------------------------------------------------------------------


def lists_needed(pool: PoolSettings, claimable: int) -> int:
    """The low-water rule: nothing while ``claimable >= low_water``; below it, enough lists to
    bring the pool back to ``target_available``."""
    if claimable >= pool.low_water:
        return 0
    return math.ceil((pool.target_available - claimable) / pool.list_size)


def list_name_prefix(list_prefix: str) -> str:
    """How the names of one installation's lists begin (``[qualtrics] list_prefix`` and a
    slash): gc takes the lists named so as its own, and no other."""
    return f"{list_prefix}/"


def new_list_name(list_prefix: str, pool: str) -> str:
    """A list's unique, deterministic-once-chosen name: how a lost create is found again."""
    return f"{list_name_prefix(list_prefix)}{pool}/{uuid.uuid4().hex}"


def refill_lease_name(pool: str) -> str:
    """The lease a pool's refill holds while it works on the pool's lists."""
    return f"refill:{pool}"


def slot_key(list_name: str, index: int) -> str:
    """The ``extRef`` of a list's ``index``-th placeholder: unique across all lists (the list's
    random part, not its full name, so that it fits the column whatever the pool's name)."""
    return f"linkpool:{list_name.rsplit('/', 1)[-1]}#{index}"


def placeholder_contacts(
    list_name: str, size: int, embedded_data: Mapping[str, str]
) -> list[dict[str, Any]]:
    """The contacts of one list. Keys without a value are omitted (imports refuse nulls)."""
    contacts: list[dict[str, Any]] = []
    for index in range(size):
        contact: dict[str, Any] = {"extRef": slot_key(list_name, index)}
        if embedded_data:
            contact["embeddedData"] = dict(embedded_data)
        contacts.append(contact)
    return contacts


def import_batches(
    contacts: list[dict[str, Any]],
    *,
    max_contacts: int = MAX_IMPORT_CONTACTS,
    max_bytes: int = MAX_IMPORT_BYTES,
) -> list[list[dict[str, Any]]]:
    """``contacts`` cut into as few imports as the limits allow (count and encoded size)."""
    envelope = len(json.dumps({"contacts": []}))
    batches: list[list[dict[str, Any]]] = []
    batch: list[dict[str, Any]] = []
    size = envelope
    for contact in contacts:
        encoded = len(json.dumps(contact).encode("utf-8")) + 2  # and the ", " between items
        if envelope + encoded > max_bytes:
            raise _CannotComplete(f"one placeholder contact is larger than {max_bytes} bytes")
        if batch and (len(batch) >= max_contacts or size + encoded > max_bytes):
            batches.append(batch)
            batch, size = [], envelope
        batch.append(contact)
        size += encoded
    if batch:
        batches.append(batch)
    return batches


def estimate_calls(pool: PoolSettings, lists: int) -> Counter[str]:
    """About how many API calls provisioning ``lists`` new lists takes (for ``--dry-run``)."""
    if not lists:
        return Counter()
    # The placeholders do not depend on the prefix: slot_key keeps only the name's random part.
    name = new_list_name(DEFAULT_LIST_PREFIX, pool.name)
    contacts = placeholder_contacts(name, pool.list_size, pool.embedded_data)
    imports = len(import_batches(contacts))
    per_list = {
        "create_list": 1,
        "import": imports,
        "poll_import": imports,
        "distribute": 1,
        "links": math.ceil(pool.list_size / LINKS_PAGE_SIZE_GUESS),
    }
    return Counter({_ENDPOINTS[step]: count * lists for step, count in per_list.items()})


# --- the command -----------------------------------------------------------------------------


def refill(
    settings: Settings,
    client: QualtricsClient | None,
    store: Store,
    clock: Clock,
    pool: str | None = None,
    dry_run: bool = False,
    progress: Progress | None = None,
    *,
    links_wait: timedelta = LINKS_WAIT,
    stop: threading.Event | None = None,
) -> RefillReport:
    """Refill every configured pool (or only ``pool``); see the module docstring.

    Never raises for one pool's failure: each pool's errors are in its report, and
    ``RefillReport.exit_code`` is 1 when any pool failed. ``dry_run`` reads the database only
    and calls nothing (``client`` may then be None). Once ``stop`` is set, lists stop between
    two steps (the next run resumes them) and no new list is started.
    """
    pools = _selected_pools(settings, pool)
    started = clock.monotonic()
    if dry_run:
        reports = [_dry_run(store, clock, settings) for settings in pools]
        return RefillReport(reports, dry_run=True, duration_s=clock.monotonic() - started)
    if client is None:
        raise ValueError("refill needs a Qualtrics client unless dry_run is set")
    qualtrics = settings.require_qualtrics()
    run = _Run(
        client=client,
        store=store,
        clock=clock,
        progress=_ProgressTotals(progress),
        workers=qualtrics.max_concurrency,
        list_prefix=qualtrics.list_prefix,
        links_wait=links_wait,
        stop=stop or threading.Event(),
    )
    with ThreadPoolExecutor(max_workers=run.workers, thread_name_prefix="refill") as executor:
        futures = [executor.submit(_PoolRefill(run, settings).run) for settings in pools]
        reports = [future.result() for future in futures]
    return RefillReport(reports, duration_s=clock.monotonic() - started)


def _selected_pools(settings: Settings, name: str | None) -> list[PoolSettings]:
    if name is None:
        return list(settings.pools.values())
    if name not in settings.pools:
        raise UnknownPool(name, list(settings.pools))
    return [settings.pools[name]]


def _dry_run(store: Store, clock: Clock, pool: PoolSettings) -> PoolReport:
    """What a refill would do now, assuming unfinished lists complete: database reads only."""
    counts = store.counts(pool.name, clock.now(), pool.min_remaining)
    unfinished = store.lists_in_states(ListState.PROVISIONING, pool.name)
    pending = sum(row["size"] for row in unfinished)
    lists = lists_needed(pool, counts.claimable + pending)
    return PoolReport(
        pool=pool.name,
        claimable_before=counts.claimable,
        claimable_after=counts.claimable,
        lists_resumed=len(unfinished),
        lists_planned=lists,
        links_planned=lists * pool.list_size,
        api_calls=estimate_calls(pool, lists),
    )


# --- machinery -------------------------------------------------------------------------------


class _CannotComplete(LinkPoolError):
    """A list cannot be completed: abandon it."""


class _Stopped(LinkPoolError):
    """Refill was asked to stop (shutdown): the next run resumes this list."""


class _ListTaken(LinkPoolError):
    """The list left the state this run expected (another job took it): leave it alone."""


_PERMANENT = (BadRequest, NotFound, _CannotComplete)
"""Errors after which a list is abandoned; any other error leaves it for the next run."""


class _ProgressTotals:
    """Sums progress across the pools' threads for one callback."""

    def __init__(self, callback: Progress | None) -> None:
        self.callback = callback
        self.done = 0
        self.planned = 0
        self._lock = threading.Lock()

    def add(self, *, planned: int = 0, done: int = 0) -> None:
        if self.callback is None:
            return
        with self._lock:
            self.planned += planned
            self.done += done
            figures = (self.done, self.planned)
        self.callback(*figures)


@dataclass
class _Run:
    client: QualtricsClient
    store: Store
    clock: Clock
    progress: _ProgressTotals
    workers: int
    list_prefix: str
    links_wait: timedelta
    stop: threading.Event


class _PoolRefill:
    """One pool's refill: resume what is unfinished, then provision what is missing."""

    def __init__(self, run: _Run, pool: PoolSettings) -> None:
        self.ctx = run
        self.pool = pool
        self.client = run.client
        self.store = run.store
        self.clock = run.clock
        self.lease = Lease(run.store, refill_lease_name(pool.name), run.clock, ttl=LEASE_TTL)
        self.report = PoolReport(pool.name)
        self.expected_links: dict[int, int] = {}
        self._lock = threading.Lock()

    def run(self) -> PoolReport:
        started = self.clock.monotonic()
        with self.client.tally(self.report.api_calls):
            try:
                self.report.claimable_before = self._claimable()
                if self.lease.acquire():
                    try:
                        self._refill()
                    finally:
                        self.lease.release()
                else:
                    self.report.skipped = "already running"
                self.report.claimable_after = self._claimable()
            except Exception as exc:  # noqa: BLE001 - one pool's failure never stops the others
                self._error(exc)
        self.report.duration_s = self.clock.monotonic() - started
        self._log()
        return self.report

    def _refill(self) -> None:
        unfinished = self.store.lists_in_states(ListState.PROVISIONING, self.pool.name)
        if unfinished:
            self.report.lists_resumed = len(unfinished)
            self._resume(unfinished)
        for _ in range(MAX_ROUNDS):
            if self.report.errors or self.ctx.stop.is_set():
                return  # do not pile new lists onto a pool that is failing
            count = lists_needed(self.pool, self._claimable())
            if not count:
                return
            self._count("lists_planned", count)
            self._count("links_planned", count * self.pool.list_size)
            self._provision_all([self._plan_list() for _ in range(count)])
        if lists_needed(self.pool, self._claimable()):
            self._error(
                _CannotComplete(
                    f"{self.report.lists_failed} list(s) could not be completed and the pool "
                    f"is still below low_water after {MAX_ROUNDS} rounds"
                )
            )

    def _claimable(self) -> int:
        return self.store.counts(
            self.pool.name, self.clock.now(), self.pool.min_remaining
        ).claimable

    def _plan_list(self) -> int:
        """The list's row, with its name, before anything is asked of Qualtrics."""
        return self.store.create_list(
            pool=self.pool.name,
            survey_id=self.pool.survey_id,
            name=new_list_name(self.ctx.list_prefix, self.pool.name),
            size=self.pool.list_size,
            now=self.clock.now(),
        )

    # --- resuming ---

    def _resume(self, unfinished: list[RowMapping]) -> None:
        """Settle the lists whose last POST may have taken effect, then drive them all on."""
        planned = [row for row in unfinished if row["state"] == ListState.PLANNED]
        if planned:
            found = self._find_mailing_lists({row["name"] for row in planned})
            for row in planned:
                if row["name"] in found:
                    self._advance(row, ListState.LIST_CREATED, mailing_list_id=found[row["name"]])
        imported = [row for row in unfinished if row["state"] == ListState.IMPORTED]
        for survey_id in sorted({row["survey_id"] for row in imported}):
            rows = [row for row in imported if row["survey_id"] == survey_id]
            found = self._find_distributions(survey_id, {row["name"] for row in rows})
            for row in rows:
                if row["name"] in found:
                    self._advance(row, ListState.DISTRIBUTED, distribution_id=found[row["name"]])
        self._provision_all([row["id"] for row in unfinished])

    def _find_mailing_lists(self, names: set[str]) -> dict[str, str]:
        """name → mailing list id, for those of ``names`` that exist in the directory."""
        found: dict[str, str] = {}
        for element in self.client.iter_mailing_lists():
            if element.get("name") in names:
                found[element["name"]] = element["mailingListId"]
                if len(found) == len(names):
                    break
        return found

    def _find_distributions(self, survey_id: str, descriptions: set[str]) -> dict[str, str]:
        """description → distribution id, for those of ``descriptions`` that exist."""
        found: dict[str, str] = {}
        for element in self.client.iter_distributions(survey_id):
            if element.get("description") in descriptions:
                found[element["description"]] = element["id"]
                if len(found) == len(descriptions):
                    break
        return found

    # --- provisioning ---

    def _provision_all(self, list_ids: list[int]) -> None:
        sizes = [self.store.get_list(list_id)["size"] for list_id in list_ids]
        self.ctx.progress.add(planned=sum(sizes))
        # Twice the client's concurrency: while some lists wait for their import (sleeping, not
        # holding a request slot), others use the slots. The client still caps requests in
        # flight at max_concurrency.
        workers = min(2 * self.ctx.workers, len(list_ids))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="refill-list") as pool:
            list(pool.map(self._provision_one, list_ids, sizes))

    def _provision_one(self, list_id: int, size: int) -> None:
        with self.client.tally(self.report.api_calls):  # a worker thread: its calls count too
            try:
                self._provision(list_id)
            except _ListTaken:
                logger.warning(
                    "refill %s: list %d was taken by another job", self.pool.name, list_id
                )
            except _Stopped:
                logger.info("refill %s: list %d left for the next run", self.pool.name, list_id)
            except _PERMANENT as exc:
                self._abandon(list_id, exc)
            except Exception as exc:  # noqa: BLE001 - reported; the list is resumed next run
                self._error(exc, list_id)
            finally:
                self.ctx.progress.add(done=size)

    def _provision(self, list_id: int) -> None:
        steps: dict[str, Callable[[RowMapping], None]] = {
            ListState.PLANNED: self._create_list,
            ListState.LIST_CREATED: self._import_contacts,
            ListState.IMPORTING: self._resume_import,
            ListState.IMPORTED: self._distribute,
            ListState.DISTRIBUTED: self._store_links,
        }
        row = self.store.get_list(list_id)
        while row["state"] in steps:
            self._between_steps()
            steps[row["state"]](row)
            row = self.store.get_list(list_id)

    def _create_list(self, row: RowMapping) -> None:
        try:
            mailing_list_id = self.client.create_mailing_list(row["name"])
        except OutcomeUnknown:
            found = self._find_mailing_lists({row["name"]})
            if row["name"] not in found:
                raise _CannotComplete(
                    "creating the mailing list got no answer and no list of its name exists"
                ) from None
            mailing_list_id = found[row["name"]]
        self._count("lists_created")
        self._advance(row, ListState.LIST_CREATED, mailing_list_id=mailing_list_id)

    def _import_contacts(self, row: RowMapping) -> None:
        contacts = placeholder_contacts(row["name"], row["size"], self.pool.embedded_data)
        self._advance(row, ListState.IMPORTING, import_id=None)
        row = self.store.get_list(row["id"])
        refused = 0
        for batch in import_batches(contacts):
            self._between_steps()
            try:
                job = self.client.start_import(row["mailing_list_id"], batch)
            except OutcomeUnknown:
                raise _CannotComplete(
                    "an import got no answer, and an import cannot be found without its id"
                ) from None
            except RateLimited:
                if row["import_id"] is None:
                    # Refused before anything was imported: the next run imports afresh
                    # instead of abandoning the list.
                    self._advance(row, ListState.LIST_CREATED)
                raise
            self._advance(row, ListState.IMPORTING, import_id=job.id)
            row = self.store.get_list(row["id"])  # its import_id now says a part went in
            status = self.client.wait_for_import(
                row["mailing_list_id"], job.id, timeout=IMPORT_TIMEOUT
            )
            refused += len(job.unprocessed) + status.failed
        self.expected_links[row["id"]] = row["size"] - refused
        self._advance(row, ListState.IMPORTED)

    def _resume_import(self, row: RowMapping) -> None:
        contacts = placeholder_contacts(row["name"], row["size"], self.pool.embedded_data)
        if row["import_id"] is None:
            raise _CannotComplete("an import was interrupted before its id was recorded")
        if len(import_batches(contacts)) > 1:
            raise _CannotComplete("an import of several parts was interrupted")
        status = self.client.wait_for_import(
            row["mailing_list_id"], row["import_id"], timeout=IMPORT_TIMEOUT
        )
        self.expected_links[row["id"]] = row["size"] - status.failed - len(status.unprocessed)
        self._advance(row, ListState.IMPORTED)

    def _distribute(self, row: RowMapping) -> None:
        expires_at = (self.clock.now() + self.pool.link_ttl).replace(microsecond=0)
        self._advance(row, ListState.IMPORTED, expires_at=expires_at)
        try:
            distribution_id = self.client.create_link_distribution(
                survey_id=row["survey_id"],
                mailing_list_id=row["mailing_list_id"],
                description=row["name"],
                expires_at=expires_at,
            )
        except (BadRequest, NotFound) as exc:
            raise _survey_refused(exc, row["survey_id"]) from None
        except OutcomeUnknown:
            found = self._find_distributions(row["survey_id"], {row["name"]})
            if row["name"] not in found:
                raise _CannotComplete(
                    "creating the distribution got no answer and none of its description exists"
                ) from None
            distribution_id = found[row["name"]]
        self._advance(row, ListState.DISTRIBUTED, distribution_id=distribution_id)

    def _store_links(self, row: RowMapping) -> None:
        """Read the links until every contact has one or ``links_wait`` is over; then store
        them and mark the list ready, in one transaction."""
        slots = {slot_key(row["name"], index) for index in range(row["size"])}
        expected = self.expected_links.get(row["id"], row["size"])
        deadline = self.clock.monotonic() + self.ctx.links_wait.total_seconds()
        delay = LINKS_FIRST_DELAY
        while True:
            links, skipped = self._read_links(row, slots)
            remaining = deadline - self.clock.monotonic()
            if len(links) + skipped >= expected or remaining <= 0:
                break
            logger.info(
                "refill %s: list %d has %d of %d links so far; reading again in %.0fs",
                self.pool.name,
                row["id"],
                len(links) + skipped,
                expected,
                min(delay, remaining),
            )
            self.clock.sleep(min(delay, remaining))
            delay = min(delay * 2, LINKS_MAX_DELAY)
            self._between_steps()
        shortfall = row["size"] - len(links)
        if not self.store.finish_list(
            row["id"], self.pool.name, links, now=self.clock.now(), shortfall=shortfall
        ):
            raise _ListTaken()
        if shortfall:
            logger.warning(
                "refill %s: list %d stored with %d of %d links (%d skipped for contact frequency)",
                self.pool.name,
                row["id"],
                len(links),
                row["size"],
                skipped,
            )
        self._count("lists_ready")
        self._count("links_added", len(links))
        self._count("shortfall", shortfall)

    def _read_links(self, row: RowMapping, slots: set[str]) -> tuple[list[dict[str, Any]], int]:
        """The usable links of a list's slots, and how many were skipped for contact frequency."""
        links: list[dict[str, Any]] = []
        seen: set[str] = set()
        skipped = 0
        for element in self.client.iter_links(row["distribution_id"], row["survey_id"]):
            slot = element.get("externalDataReference")
            if slot not in slots or slot in seen:
                continue
            seen.add(slot)
            if element.get("exceededContactFrequency"):
                skipped += 1
                continue
            url, contact_id = element.get("link"), element.get("contactId")
            if not url or not contact_id:
                continue
            lookup = _LOOKUP_ID.search(url)
            links.append(
                {
                    "ext_ref": slot,
                    "contact_id": contact_id,
                    "contact_lookup_id": lookup.group(1) if lookup else None,
                    "url": url,
                    "expires_at": _parse_time(element.get("linkExpiration")) or row["expires_at"],
                }
            )
        return links, skipped

    # --- failure ---

    def _abandon(self, list_id: int, error: Exception) -> None:
        """Delete what the list made on Qualtrics and mark it failed (gc retries a deletion
        that fails here)."""
        row = self.store.get_list(list_id)
        deleted = self._delete_on_qualtrics(row)
        now = self.clock.now()
        self.store.advance_list(
            list_id,
            expected_state=row["state"],
            now=now,
            state=ListState.FAILED,
            last_error=str(error),
            deleted_at=now if deleted else None,
        )
        self._count("lists_failed")
        if isinstance(error, _CannotComplete):
            # a lost answer, now settled: the list is replaced, the run has not failed
            logger.warning("refill %s: list %d abandoned: %s", self.pool.name, list_id, error)
        else:
            self._error(error, list_id)

    def _delete_on_qualtrics(self, row: RowMapping) -> bool:
        deletions = (
            (self.client.delete_distribution, row["distribution_id"]),
            (self.client.delete_mailing_list, row["mailing_list_id"]),
        )
        deleted = True
        for delete, qualtrics_id in deletions:
            if qualtrics_id is None:
                continue
            try:
                delete(qualtrics_id)
            except NotFound:
                pass  # already gone
            except QualtricsError as exc:
                deleted = False
                logger.warning("refill %s: could not delete %s: %s", row["pool"], qualtrics_id, exc)
        return deleted

    # --- bookkeeping ---

    def _between_steps(self) -> None:
        """Stop here if asked to; else renew the lease (LeaseLost if another run took it)."""
        if self.ctx.stop.is_set():
            raise _Stopped()
        self.lease.renew()

    def _advance(self, row: RowMapping, state: str, **values: Any) -> None:
        moved = self.store.advance_list(
            row["id"], expected_state=row["state"], now=self.clock.now(), state=state, **values
        )
        if not moved:
            raise _ListTaken()

    def _count(self, figure: str, amount: int = 1) -> None:
        with self._lock:
            setattr(self.report, figure, getattr(self.report, figure) + amount)

    def _error(self, error: Exception, list_id: int | None = None) -> None:
        where = f"list {list_id}: " if list_id is not None else ""
        if isinstance(error, LinkPoolError):
            message = f"{where}{error}"
        else:
            message = f"{where}{type(error).__name__}: {error}"
        with self._lock:
            self.report.errors.append(message)
        logger.error("refill %s: %s", self.pool.name, message)

    def _log(self) -> None:
        r = self.report
        if r.skipped:
            logger.info("refill %s: skipped, %s", r.pool, r.skipped)
            return
        logger.info(
            "refill %s: claimable %d -> %d, %d list(s) ready, %d failed, %d link(s) added, "
            "shortfall %d, %d API call(s), %.1fs%s",
            r.pool,
            r.claimable_before,
            r.claimable_after,
            r.lists_ready,
            r.lists_failed,
            r.links_added,
            r.shortfall,
            sum(r.api_calls.values()),
            r.duration_s,
            f", {len(r.errors)} error(s)" if r.errors else "",
        )


def _survey_refused(error: BadRequest | NotFound, survey_id: str) -> QualtricsError:
    """The distribution is the first call that names the survey: say which setting to fix."""
    return type(error)(
        f"Qualtrics refused to make links for survey {survey_id}: check the pool's survey_id "
        "and that the survey is active",
        status_code=error.status_code,
        error_code=error.error_code,
        error_message=error.error_message,
        request_id=error.request_id,
        method=error.method,
        endpoint=error.endpoint,
    )


def _parse_time(value: Any) -> datetime | None:
    """Qualtrics times: ISO 8601 with ``Z``, or ``YYYY-MM-DD HH:MM:SS`` (UTC)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return utc(datetime.fromisoformat(value.replace("Z", "+00:00")))
    except ValueError:
        return None


__all__ = [
    "LINKS_WAIT",
    "PoolReport",
    "Progress",
    "RefillReport",
    "estimate_calls",
    "import_batches",
    "list_name_prefix",
    "lists_needed",
    "placeholder_contacts",
    "refill",
    "refill_lease_name",
    "slot_key",
]
