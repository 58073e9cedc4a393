"""``linkpool sync``: write each claim's recipient and data onto its placeholder contact.

Qualtrics records a snapshot of a contact's embedded data when the respondent takes the survey,
so data written onto the placeholder after the claim, before the link is opened, reaches the
response. Every claim leaves its link with ``writeback = 'pending'`` due at once; ``sync`` pushes
the due ones with ``PUT …/contacts/{contactId}``:

    embeddedData = pool.embedded_data + claim data (values as text) + {recipient_field: recipient}

and, only when ``[sync] contact_fields`` maps them, ``firstName`` / ``lastName`` / ``email``
from the claim data (off by default: a directory may deduplicate contacts by email).

A failure is retried at the next due time with exponential backoff, up to
``[sync] max_attempts``; then the write-back is ``failed`` with its error, and ``sync
--retry-failed`` puts failed ones back in the queue. A refusal that retrying cannot fix (400,
404, a list gc already deleted) fails at once. The database stays the source of truth either
way: ``export`` lists every claim with its write-back state.

``sync`` also clears the contacts of recipients ``forget`` erased while Qualtrics was
unreachable (or while a sync was running): the same PUT, with the recipient field and every data
field emptied. A clearing is never given up; it is retried with the same backoff until it lands.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from linkpool.clock import Clock
from linkpool.config import PoolSettings, Settings, SyncSettings
from linkpool.errors import AuthError, BadRequest, Interrupted, NotFound, QualtricsError
from linkpool.job import JobContext, JobReport
from linkpool.lease import Lease
from linkpool.models import Erasure, ListState, WriteBack
from linkpool.qualtrics.client import LOOKUP_PREFIX, QualtricsClient
from linkpool.store import (
    ErasureOutcome,
    ErasureRecord,
    Store,
    WriteBackOutcome,
    WriteBackRecord,
)

logger = logging.getLogger("linkpool.sync")

LEASE_NAME = "sync"
BATCH_SIZE = 200
BACKOFF_BASE = timedelta(seconds=30)
BACKOFF_CAP = timedelta(hours=1)

_GONE_STATES = (ListState.REAPING, ListState.DISTRIBUTION_DELETED, ListState.DELETED)


@dataclass
class SyncReport(JobReport):
    written: int = 0
    retrying: int = 0  # failed this time; tried again once their backoff has passed
    failed: int = 0  # given up: attempts spent, or refused for good
    requeued: int = 0  # failed write-backs made pending again by --retry-failed
    contacts_cleared: int = 0  # contacts of forgotten recipients cleared (see ``forget``)
    api_calls: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)

    def summary_parts(self) -> list[str]:
        return [
            f"written {self.written}",
            f"retrying {self.retrying}",
            f"failed {self.failed}",
            f"requeued {self.requeued}",
            f"contacts cleared {self.contacts_cleared}",
        ]


class SyncJob:
    """``sync`` as a scheduled job."""

    name = "sync"
    lock = LEASE_NAME
    default_interval = timedelta(seconds=30)

    def run(self, context: JobContext, stop: threading.Event) -> SyncReport:
        return sync(
            context.settings, context.require_client(), context.store, context.clock, stop=stop
        )


SYNC_JOB = SyncJob()


def sync(
    settings: Settings,
    client: QualtricsClient,
    store: Store,
    clock: Clock,
    retry_failed: bool = False,
    *,
    batch_size: int = BATCH_SIZE,
    stop: threading.Event | None = None,
) -> SyncReport:
    """Push every due write-back once. Raises LeaseHeld when another sync is running, and
    AuthError (after saving what was done) when Qualtrics refuses the token. Once ``stop`` is
    set, no further write-back starts: the rest stay pending, as they were, for the next run."""
    report = SyncReport()
    client.verify_host()
    writer = Writer(client, settings.pools, settings.sync, clock)
    workers = settings.qualtrics.max_concurrency if settings.qualtrics else 1
    stop = stop or threading.Event()

    with (
        Lease(store, LEASE_NAME, clock) as lease,
        ThreadPoolExecutor(max_workers=workers, thread_name_prefix="linkpool-sync") as pool,
    ):
        store = store.fenced(lease.fence())  # no write once the lease is lost

        def attempt(row: WriteBackRecord) -> WriteBackOutcome | AuthError | None:
            if stop.is_set():
                return None  # not attempted: left pending
            # in a worker thread: its calls count, and wait on the lease, here too
            with client.tally(report.api_calls), client.guarded(lease.check):
                try:
                    return writer.attempt(row)
                except Interrupted:
                    return None  # a retry's wait cut short by the stop: left pending

        if retry_failed:
            report.requeued = store.requeue_failed_writebacks(now=clock.now())
        attempted: set[int] = set()
        while not stop.is_set():
            due = store.due_writebacks(now=clock.now(), limit=batch_size)
            batch = [row for row in due if row.id not in attempted]
            if not batch:
                break
            attempted.update(row.id for row in batch)
            results = list(pool.map(attempt, batch))
            store.set_contact_ids(writer.take_resolved())
            _save(store, report, results)
            lease.check()
        if not stop.is_set():
            # After the write-backs: a write-back sent in this run is cleared after it landed.
            with client.tally(report.api_calls), client.guarded(lease.check):
                cleared = clear_contacts(client, store, settings.pools, settings.sync, clock)
            report.contacts_cleared = cleared.cleared
            report.errors.extend(cleared.errors)
    return report


@dataclass
class Clearing:
    """What one pass of contact clearings did."""

    cleared: int = 0
    pending: int = 0  # Qualtrics did not answer: retried by the next sync
    unreachable: int = 0  # the list is gone: no list call reaches the contact
    failed: int = 0  # Qualtrics refused the clearing
    errors: list[str] = field(default_factory=list)


def clear_contacts(
    client: QualtricsClient,
    store: Store,
    pools: Mapping[str, PoolSettings],
    sync_settings: SyncSettings,
    clock: Clock,
    *,
    link_ids: Sequence[int] | None = None,
    stop_on_outage: bool = False,
) -> Clearing:
    """Clear every due contact of a forgotten recipient (of ``link_ids`` only, if given).

    The caller holds the sync lease, so no write-back of these claims is in flight. With
    ``stop_on_outage``, the first clearing Qualtrics does not answer ends the pass (the rest
    stay due, for sync). Raises AuthError (after saving what was done) when Qualtrics refuses
    the token."""
    clearing = Clearing()
    clearer = Clearer(client, pools, sync_settings, clock)
    attempted: set[int] = set()
    while True:
        due = store.due_erasures(now=clock.now(), limit=BATCH_SIZE, link_ids=link_ids)
        batch = [row for row in due if row.id not in attempted]
        if not batch:
            return clearing
        attempted.update(row.id for row in batch)
        outcomes: list[ErasureOutcome] = []
        refused: AuthError | None = None
        for row in batch:
            result = clearer.attempt(row)
            if isinstance(result, AuthError):
                refused = result
                break
            outcomes.append(result)
            if stop_on_outage and result.state == Erasure.PENDING:
                break
        store.set_contact_ids(clearer.writer.take_resolved())
        store.record_erasures(outcomes)
        _count_clearings(clearing, outcomes)
        if refused is not None:
            raise refused
        if len(outcomes) < len(batch):
            return clearing


def _count_clearings(clearing: Clearing, outcomes: Sequence[ErasureOutcome]) -> None:
    for outcome in outcomes:
        if outcome.state == Erasure.DONE:
            clearing.cleared += 1
        elif outcome.state == Erasure.PENDING:
            clearing.pending += 1
        elif outcome.state == Erasure.UNREACHABLE:
            clearing.unreachable += 1
        else:
            clearing.failed += 1
        if outcome.state != Erasure.DONE and outcome.error:
            clearing.errors.append(f"clearing link {outcome.link_id}: {outcome.error}")


class Clearer:
    """Empties, on a forgotten recipient's placeholder contact, what write-back put there."""

    def __init__(
        self,
        client: QualtricsClient,
        pools: Mapping[str, PoolSettings],
        settings: SyncSettings,
        clock: Clock,
    ) -> None:
        self.writer = Writer(client, pools, settings, clock)

    def attempt(self, row: ErasureRecord) -> ErasureOutcome | AuthError:
        attempts = row.erasure_attempts + 1
        if row.list_state in ListState.GONE or row.mailing_list_id is None:
            return ErasureOutcome(row.id, Erasure.UNREACHABLE, attempts, None, _LIST_GONE)
        try:
            contact_id = self.writer.directory_contact(row, row.mailing_list_id)
            fields = self.clearing_fields(row)
            self.writer.client.update_contact(row.mailing_list_id, contact_id, fields)
        except AuthError as exc:
            return exc
        except NotFound as exc:
            return ErasureOutcome(row.id, Erasure.UNREACHABLE, attempts, None, str(exc))
        except BadRequest as exc:
            error = f"Qualtrics refused it: {exc}"
            return ErasureOutcome(row.id, Erasure.FAILED, attempts, None, error)
        except QualtricsError as exc:
            due_at = self.writer.clock.now() + backoff(attempts)
            return ErasureOutcome(row.id, Erasure.PENDING, attempts, due_at, str(exc))
        return ErasureOutcome(row.id, Erasure.DONE, attempts, None, None)

    def clearing_fields(self, row: ErasureRecord) -> dict[str, Any]:
        """The PUT body: the recipient field and each data key emptied (a key the pool
        itself sets goes back to the pool's value), and the mapped contact fields emptied."""
        keys = row.data_keys
        pool = self.writer.pools.get(row.pool)
        pool_data = dict(pool.embedded_data) if pool is not None else {}
        embedded: dict[str, Any] = {key: pool_data.get(key, "") for key in keys}
        embedded[self.writer.settings.recipient_field] = ""
        fields: dict[str, Any] = {"embeddedData": embedded}
        for qualtrics_field, key in self.writer.settings.contact_fields.items():
            if key in keys:
                fields[qualtrics_field] = ""
        return fields


_LIST_GONE = (
    "gc deleted its mailing list before the clearing: the contact stays in the directory "
    "(deleted with it under [gc] purge_contacts); see docs/privacy.md"
)


def write_back_claim(
    client: QualtricsClient,
    store: Store,
    pools: Mapping[str, PoolSettings],
    sync_settings: SyncSettings,
    clock: Clock,
    link_id: int,
) -> bool:
    """Write one claim back now (``LinkPool.claim(..., sync=True)``); True once it is done.

    Never raises for Qualtrics being down: the write-back then stays pending for ``sync``.
    """
    row = store.writeback_of(link_id)
    if row is None or row.writeback != WriteBack.PENDING:
        return row is not None and row.writeback == WriteBack.DONE
    writer = Writer(client, pools, sync_settings, clock)
    result = writer.attempt(row)
    store.set_contact_ids(writer.take_resolved())
    if isinstance(result, AuthError):
        logger.warning("write-back of link %s left pending: %s", link_id, result)
        return False
    store.record_writebacks([result])
    return result.state == WriteBack.DONE


def _save(
    store: Store, report: SyncReport, results: Sequence[WriteBackOutcome | AuthError | None]
) -> None:
    """Record a batch's outcomes (None: not attempted) in one transaction; then stop on a
    refused token."""
    outcomes = [result for result in results if isinstance(result, WriteBackOutcome)]
    store.record_writebacks(outcomes)
    for outcome in outcomes:
        if outcome.state == WriteBack.DONE:
            report.written += 1
        elif outcome.state == WriteBack.FAILED:
            report.failed += 1
            report.errors.append(f"link {outcome.link_id}: {outcome.error}")
        else:
            report.retrying += 1
    refused = next((result for result in results if isinstance(result, AuthError)), None)
    if refused is not None:
        raise refused


class Writer:
    """Attempts write-backs and decides what each attempt leaves behind. Thread-safe."""

    def __init__(
        self,
        client: QualtricsClient,
        pools: Mapping[str, PoolSettings],
        settings: SyncSettings,
        clock: Clock,
    ) -> None:
        self.client = client
        self.pools = pools
        self.settings = settings
        self.clock = clock
        self._members: dict[str, dict[str, str]] = {}
        self._resolved: dict[int, str] = {}
        self._lock = threading.Lock()

    def attempt(self, row: WriteBackRecord) -> WriteBackOutcome | AuthError:
        """One PUT for one link. An AuthError is returned, not counted as an attempt: every
        write-back would fail alike, so the run stops and nothing burns its budget."""
        attempts = row.writeback_attempts + 1
        if row.list_state in _GONE_STATES or row.mailing_list_id is None:
            return self.failed(
                row,
                attempts,
                f"its list {row.mailing_list_id or '(never created)'} was deleted by gc "
                "before the write-back ran; the data stays in the ledger (see export)",
            )
        try:
            contact_id = self.directory_contact(row, row.mailing_list_id)
            self.client.update_contact(row.mailing_list_id, contact_id, self.contact_fields(row))
        except AuthError as exc:
            return exc
        except (BadRequest, NotFound) as exc:
            return self.failed(row, attempts, f"Qualtrics refused it: {exc}")
        except QualtricsError as exc:
            return self.retry_later(row, attempts, str(exc))
        return WriteBackOutcome(row.id, WriteBack.DONE, attempts, None, None)

    def directory_contact(self, row: WriteBackRecord | ErasureRecord, mailing_list_id: str) -> str:
        """The ``CID_`` a write-back addresses. A link stored with the list entry (``CGC_``,
        what the links listing may give) is matched by ``extRef`` in one pass over its
        list's contacts, once per list per run; what is found is saved (``take_resolved``)."""
        if not row.contact_id.startswith(LOOKUP_PREFIX):
            return row.contact_id
        with self._lock:
            members = self._members.get(mailing_list_id)
            if members is None:
                members = self.client.contact_ids_by_ext_ref(mailing_list_id)
                self._members[mailing_list_id] = members
            contact_id = members.get(row.ext_ref)
            if contact_id is None:
                raise NotFound(
                    f"no contact with extRef {row.ext_ref} in mailing list {mailing_list_id}"
                )
            self._resolved[row.id] = contact_id
        return contact_id

    def take_resolved(self) -> dict[int, str]:
        """The directory contacts found since the last call: link id → ``CID_``."""
        with self._lock:
            resolved, self._resolved = self._resolved, {}
        return resolved

    def contact_fields(self, row: WriteBackRecord) -> dict[str, Any]:
        """The PUT body: embedded data, plus the mapped contact fields if configured."""
        data = json.loads(row.data) if row.data else {}
        pool = self.pools.get(row.pool)
        embedded = claim_embedded_data(pool, data, row.recipient, self.settings.recipient_field)
        fields: dict[str, Any] = {"embeddedData": embedded}
        for qualtrics_field, key in self.settings.contact_fields.items():
            if data.get(key) is not None:
                fields[qualtrics_field] = as_text(data[key])
        return fields

    def retry_later(self, row: WriteBackRecord, attempts: int, error: str) -> WriteBackOutcome:
        if attempts >= self.settings.max_attempts:
            return self.failed(row, attempts, f"gave up after {attempts} attempt(s): {error}")
        due_at = self.clock.now() + backoff(attempts)
        logger.info(
            "write-back of link %s failed (attempt %d), retry at %s", row.id, attempts, due_at
        )
        return WriteBackOutcome(row.id, WriteBack.PENDING, attempts, due_at, error)

    def failed(self, row: WriteBackRecord, attempts: int, error: str) -> WriteBackOutcome:
        logger.warning("write-back of link %s failed: %s", row.id, error)
        return WriteBackOutcome(row.id, WriteBack.FAILED, attempts, None, error)


def claim_embedded_data(
    pool: PoolSettings | None, data: Mapping[str, Any], recipient: str, recipient_field: str
) -> dict[str, str]:
    """What a claim puts on its contact or its response: the pool's embedded data, the
    claim's data (values as text) and the recipient under ``recipient_field``."""
    embedded = dict(pool.embedded_data) if pool is not None else {}
    embedded.update({key: as_text(value) for key, value in data.items() if value is not None})
    embedded[recipient_field] = recipient
    return embedded


def backoff(attempts: int) -> timedelta:
    """The wait after the ``attempts``-th failure: 30 s, 1 min, 2 min, … at most an hour."""
    return min(BACKOFF_BASE * (1 << (attempts - 1)), BACKOFF_CAP)


def as_text(value: Any) -> str:
    """Embedded data values are text: strings as they are, anything else as JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


__all__ = [
    "SYNC_JOB",
    "Clearer",
    "Clearing",
    "SyncJob",
    "SyncReport",
    "Writer",
    "as_text",
    "backoff",
    "clear_contacts",
    "claim_embedded_data",
    "sync",
    "write_back_claim",
]
