"""The provisioning state machine: one pool's refill, list by list, step by step.

See ``linkpool.refill`` for the states and how a crash at any point is resumed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from linkpool.clock import Clock, pause
from linkpool.config import PoolSettings, RefillSettings
from linkpool.errors import (
    BadRequest,
    ImportFailed,
    Interrupted,
    LeaseHeld,
    LeaseLost,
    LinkPoolError,
    NotFound,
    OutcomeUnknown,
    QualtricsError,
    QualtricsUnreachable,
    RateLimited,
)
from linkpool.lease import Lease
from linkpool.models import ListState
from linkpool.qualtrics.client import ImportStatus, QualtricsClient, required_id
from linkpool.qualtrics.endpoints import LIST_DISTRIBUTIONS
from linkpool.refill.ceiling import ListCeiling, NearListCeiling
from linkpool.refill.estimate import lists_needed, lists_to_target
from linkpool.refill.failures import (
    PERMANENT,
    CannotComplete,
    LeftForOperator,
    ListTaken,
    Stopped,
    SurveyRefused,
)
from linkpool.refill.links import links_of, with_directory_contacts
from linkpool.refill.naming import new_list_name, refill_lease_name, slot_key
from linkpool.refill.reports import PoolReport
from linkpool.refill.requests import import_batches, placeholder_contacts
from linkpool.refill.survey import SurveyCheck, with_message
from linkpool.store import ListRecord, NewLink, Store

logger = logging.getLogger("linkpool.refill")

IMPORT_TIMEOUT = 600.0
LINKS_WAIT = timedelta(minutes=5)
"""How long to keep re-reading a links listing that has fewer links than the list has contacts."""
LINKS_MAX_READS = 10
"""At most this many reads of one list's links per run: each read counts toward the contacts'
contact-frequency rules, so a listing that stays short is accepted (the shortfall reported)."""
LINKS_FIRST_DELAY = 1.0
LINKS_MAX_DELAY = 60.0
LOST_IMPORT_WAIT = timedelta(minutes=2)
"""How long to watch a list's contact count after an import whose answer was lost."""

Progress = Callable[[int, int], None]
"""Called with (links done, links planned) across all pools as a refill advances."""


class ProgressTotals:
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
class RefillRun:
    """What every pool's refill in one run shares."""

    client: QualtricsClient
    store: Store
    clock: Clock
    progress: ProgressTotals
    workers: int
    list_prefix: str
    links_wait: timedelta
    stop: threading.Event
    bounds: RefillSettings
    ceiling: ListCeiling
    purge_contacts: bool = False
    """``[gc] purge_contacts``: an abandoned list's contacts leave the directory with it."""


class PoolRefill:
    """One pool's refill: resume what is unfinished, then provision what is missing."""

    def __init__(self, run: RefillRun, pool: PoolSettings) -> None:
        self.ctx = run
        self.pool = pool
        self.client = run.client
        self.clock = run.clock
        self.lease = Lease(run.store, refill_lease_name(pool.name), run.clock)
        self.store = run.store.fenced(self.lease.fence())  # no write once the lease is lost
        self.report = PoolReport(pool.name)
        self.survey = SurveyCheck(run.client, on_refused=self._error)
        self.expected_links: dict[int, int] = {}
        self._lease_lost_reported = False
        self._lock = threading.Lock()

    def run(self) -> PoolReport:
        started = self.clock.monotonic()
        with self.client.tally(self.report.api_calls):
            try:
                self.report.claimable_before = self._claimable()
                self._refill_under_lease()
                self.report.claimable_after = self._claimable()
                self.report.stopped = self.ctx.stop.is_set() and not self.report.skipped
                if not self.report.skipped:
                    self._count_shortfall()
                    if not (self.report.errors or self.report.stopped):
                        # the lease is released by now: unfenced
                        self.ctx.store.record_success(
                            "refill", self.pool.name, now=self.clock.now()
                        )
            except Interrupted:
                logger.info("refill %s: stopped; the next run resumes", self.pool.name)
                self._settle_figures()
            except Exception as exc:  # noqa: BLE001 - one pool's failure never stops the others
                self._error(exc)
                self._settle_figures()
        self.report.duration_s = self.clock.monotonic() - started
        self._log()
        return self.report

    def _refill_under_lease(self) -> None:
        """Refill while holding the pool's lease, its heartbeat beating and every API call
        checking it; skip the pool when a live holder has it (LeaseInDoubt is an error)."""
        try:
            self.lease.take()
        except LeaseHeld as exc:
            self.report.skipped = f"already running, held by {exc.context['held_by']}"
            return
        self.lease.start_heartbeat()
        try:
            with self.client.guarded(self.lease.check):
                self._refill()
        except LeaseLost as exc:
            self._lease_lost(exc)
        finally:
            self.lease.release()

    def _settle_figures(self) -> None:
        """The end figures of a run cut short by an error or a stop."""
        self.report.claimable_after = self._claimable_after()
        self.report.stopped = self.ctx.stop.is_set() and not self.report.skipped
        self._count_shortfall()

    def _count_shortfall(self) -> None:
        missing = self.pool.target_available - self.report.claimable_after
        self.report.shortfall = max(0, missing)

    def _claimable_after(self) -> int:
        """The stock at the end, also after a failure (it is what claims can still take);
        the figure from the start when the database itself is what failed."""
        try:
            return self._claimable()
        except LinkPoolError:
            return self.report.claimable_before

    def _refill(self) -> None:
        """Resume what an earlier run left, then fill to target. Lists whose import is in
        doubt (watched for up to ``LOST_IMPORT_WAIT``) are settled beside the filling, not
        before it, so that a crashed run's pool is stocked again within seconds; if such a
        list turns out complete, the pool ends above target by that list."""
        unfinished = self.store.lists_in_states(ListState.PROVISIONING, self.pool.name)
        self.report.lists_resumed = len(unfinished)
        in_doubt = [row.id for row in unfinished if self._import_in_doubt(row)]
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="refill-doubt") as beside:
            if in_doubt:
                beside.submit(self._provision_all, in_doubt)
            certain = [row for row in unfinished if row.id not in in_doubt]
            if certain:
                self._resume(certain)
            if lists_needed(self.pool, self._claimable()):
                self._fill_to_target()
        self._check_outcome()

    def _import_in_doubt(self, row: ListRecord) -> bool:
        """An import interrupted with no id recorded, or between parts: only the list's
        contact count can tell whether it went in."""
        if row.state != ListState.IMPORTING:
            return False
        contacts = placeholder_contacts(row.name, row.size, self.pool.embedded_data)
        return row.import_id is None or len(import_batches(contacts)) > 1

    def _fill_to_target(self) -> None:
        """Provision rounds of lists until the pool is at ``target_available``: a round's
        abandoned lists are replaced by the next, within the run's bounds on lists and calls."""
        while not (self.report.errors or self.ctx.stop.is_set()):
            count = min(lists_to_target(self.pool, self._claimable()), self._lists_left())
            if count <= 0 or self._calls_used() >= self.ctx.bounds.max_calls_per_run:
                return
            try:
                self.survey.require_usable(self.pool.survey_id)
                count = self.ctx.ceiling.reserve(count)
            except SurveyRefused:
                return  # the check reported it
            except NearListCeiling as exc:
                self._error(exc)
                return
            with self._lock:
                self.report.lists_planned += count
                self.report.links_planned += count * self.pool.list_size
            self._provision_all([self._plan_list() for _ in range(count)])

    def _lists_left(self) -> int:
        return self.ctx.bounds.max_lists_per_run - self.report.lists_planned

    def _calls_used(self) -> int:
        return sum(self.report.api_calls.values())

    def _check_outcome(self) -> None:
        """A pool left below low_water is a failed run, with the reason."""
        claimable = self._claimable()
        if claimable >= self.pool.low_water or self.report.errors or self.ctx.stop.is_set():
            return
        if self._lists_left() <= 0:
            reason = f"[refill] max_lists_per_run ({self.ctx.bounds.max_lists_per_run}) reached"
        elif self._calls_used() >= self.ctx.bounds.max_calls_per_run:
            reason = f"[refill] max_calls_per_run ({self.ctx.bounds.max_calls_per_run}) reached"
        else:
            reason = "no list could be completed"
        self._error(
            CannotComplete(
                f"still below low_water ({claimable} < {self.pool.low_water}) after this run: "
                f"{reason}, {self.report.lists_failed} list(s) abandoned; the next run carries on"
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

    def _resume(self, unfinished: list[ListRecord]) -> None:
        """Settle the distributions whose POST may have taken effect, then drive every list on
        (a list whose create may have taken effect is settled by its ``creating`` step).
        Planned rows (nothing sent for them yet) the pool's settings no longer need are dropped."""
        dropped = self._drop_unneeded_plans(
            [row for row in unfinished if row.state == ListState.PLANNED], unfinished
        )
        unfinished = [row for row in unfinished if row.id not in dropped]
        imported = [row for row in unfinished if row.state == ListState.IMPORTED]
        for survey_id in sorted({row.survey_id for row in imported}):
            rows = [row for row in imported if row.survey_id == survey_id]
            found = self._find_distributions(survey_id, {row.name for row in rows})
            for row in rows:
                if row.name in found:
                    self._advance(row, ListState.DISTRIBUTED, distribution_id=found[row.name])
        if unfinished:
            self._provision_all([row.id for row in unfinished])

    def _drop_unneeded_plans(
        self, untouched: list[ListRecord], unfinished: list[ListRecord]
    ) -> set[int]:
        """Planned rows (nothing was sent to Qualtrics for them), beyond what the pool's
        current settings need (a target since lowered, a runaway plan) or of another survey or
        list size, are marked failed instead of provisioned. Returns their ids."""
        untouched_ids = {row.id for row in untouched}
        coming = sum(row.size for row in unfinished if row.id not in untouched_ids)
        wanted = min(
            lists_to_target(self.pool, self._claimable() + coming),
            self.ctx.bounds.max_lists_per_run,
        )
        fitting = [
            row.id
            for row in untouched
            if row.survey_id == self.pool.survey_id and row.size == self.pool.list_size
        ]
        dropped = untouched_ids - set(fitting[:wanted])
        if dropped:
            self.store.drop_planned_lists(
                sorted(dropped),
                now=self.clock.now(),
                reason="planned but no longer needed by the pool's settings (target, list size "
                "or survey changed since): dropped before anything was created",
            )
            logger.warning(
                "refill %s: dropped %d planned list(s) the current settings do not need",
                self.pool.name,
                len(dropped),
            )
        return dropped

    def _settle_create(self, row: ListRecord) -> None:
        """A create that was sent and never answered: carry on with the list of its name, or
        plan it afresh when the listing showed every list and it is not there. A listing at
        its cap proves nothing: the list is left for the operator, never created twice."""
        try:
            self._advance(row, ListState.LIST_CREATED, mailing_list_id=self._lookup(row.name))
        except CannotComplete:
            self._advance(row, ListState.PLANNED)
        except LeftForOperator as exc:
            self._leave_for_operator(row.id, exc)

    def _lookup(self, name: str) -> str:
        """The id of the list named ``name``; CannotComplete when certainly absent,
        LeftForOperator when the listing was capped before it was found."""
        lookup = self.client.find_mailing_list(name)
        if lookup.mailing_list_id is not None:
            return lookup.mailing_list_id
        if lookup.capped:
            raise LeftForOperator(
                f"its create got no answer and the directory's listing stops at "
                f"{lookup.seen:,} lists without it: it may exist as {name!r}. Find it in "
                "Qualtrics and delete it if it is there; linkpool will not create it twice"
            )
        raise CannotComplete(
            "creating the mailing list got no answer and no list of its name exists"
        )

    def _find_distributions(self, survey_id: str, descriptions: set[str]) -> dict[str, str]:
        """description → distribution id, for those of ``descriptions`` that exist."""
        found: dict[str, str] = {}
        for element in self.client.iter_distributions(survey_id):
            if element.get("description") in descriptions:
                found[element["description"]] = required_id(element, "id", LIST_DISTRIBUTIONS)
                if len(found) == len(descriptions):
                    break
        return found

    # --- provisioning ---

    def _provision_all(self, list_ids: list[int]) -> None:
        sizes = [self.store.get_list(list_id).size for list_id in list_ids]
        self.ctx.progress.add(planned=sum(sizes))
        # Twice the client's concurrency: while some lists wait for their import (sleeping, not
        # holding a request slot), others use the slots. The client still caps requests in
        # flight at max_concurrency.
        workers = min(2 * self.ctx.workers, len(list_ids))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="refill-list") as pool:
            list(pool.map(self._provision_one, list_ids, sizes))

    def _provision_one(self, list_id: int, size: int) -> None:
        with (
            self.client.tally(self.report.api_calls),  # a worker thread: its calls count too
            self.client.guarded(self.lease.check),
        ):
            try:
                self._provision(list_id)
            except LeaseLost as exc:
                self._lease_lost(exc)
            except LeftForOperator as exc:
                self._leave_for_operator(list_id, exc)
            except SurveyRefused:  # the check reported it, once for the pool
                logger.debug("refill %s: list %d stays planned", self.pool.name, list_id)
            except ListTaken:
                logger.warning(
                    "refill %s: list %d was taken by another job", self.pool.name, list_id
                )
            except Interrupted:  # Stopped between steps, or a wait of the client cut short
                logger.info("refill %s: list %d left for the next run", self.pool.name, list_id)
            except PERMANENT as exc:
                self._abandon(list_id, exc)
            except Exception as exc:  # noqa: BLE001 - reported; the list is resumed next run
                self._error(exc, list_id)
            finally:
                self.ctx.progress.add(done=size)

    def _provision(self, list_id: int) -> None:
        steps: dict[str, Callable[[ListRecord], None]] = {
            ListState.PLANNED: self._create_list,
            ListState.CREATING: self._settle_create,
            ListState.LIST_CREATED: self._import_contacts,
            ListState.IMPORTING: self._resume_import,
            ListState.IMPORTED: self._distribute,
            ListState.DISTRIBUTED: self._store_links,
        }
        row = self.store.get_list(list_id)
        while row.state in steps:
            self._between_steps()
            steps[row.state](row)
            row = self.store.get_list(list_id)

    def _create_list(self, row: ListRecord) -> None:
        self.survey.require_usable(row.survey_id)  # asked once a run, before the first list
        self._advance(row, ListState.CREATING)
        row = self.store.get_list(row.id)
        try:
            mailing_list_id = self.client.create_mailing_list(row.name)
        except OutcomeUnknown:
            mailing_list_id = self._lookup(row.name)
        except (BadRequest, NotFound, RateLimited, QualtricsUnreachable):
            self._advance(row, ListState.PLANNED)  # refused or never sent: nothing was created
            raise
        with self._lock:
            self.report.lists_created += 1
        self._advance(row, ListState.LIST_CREATED, mailing_list_id=mailing_list_id)

    def _import_contacts(self, row: ListRecord) -> None:
        contacts = placeholder_contacts(row.name, row.size, self.pool.embedded_data)
        self._advance(row, ListState.IMPORTING, import_id=None)
        row = self.store.get_list(row.id)
        refused = imported = 0
        for batch in import_batches(contacts):
            self._between_steps()
            imported += len(batch)
            try:
                job = self.client.start_import(_known(row.mailing_list_id), batch)
            except OutcomeUnknown:
                self._await_contact_count(row, imported - refused)
                continue
            except RateLimited:
                if row.import_id is None:
                    # Refused before anything was imported: the next run imports afresh
                    # instead of abandoning the list.
                    self._advance(row, ListState.LIST_CREATED)
                raise
            self._advance(row, ListState.IMPORTING, import_id=job.id)
            row = self.store.get_list(row.id)  # its import_id now says a part went in
            status = self._wait_for_import(row, job.id)
            refused += len(job.unprocessed) + status.failed
        self.expected_links[row.id] = row.size - refused
        self._advance(row, ListState.IMPORTED)

    def _await_contact_count(self, row: ListRecord, wanted: int) -> None:
        """After an import whose answer was lost (or a crash before its id was recorded): the
        list's contact count says whether it went in. Watch it for ``LOST_IMPORT_WAIT`` (an
        import takes a while); short of ``wanted`` by then, the list is abandoned."""
        deadline = self.clock.monotonic() + LOST_IMPORT_WAIT.total_seconds()
        delay = LINKS_FIRST_DELAY
        while True:
            count = self.client.count_contacts(_known(row.mailing_list_id))
            remaining = deadline - self.clock.monotonic()
            if count >= wanted:
                logger.info(
                    "refill %s: list %d: an import got no answer, but its %d contact(s) are in",
                    self.pool.name,
                    row.id,
                    count,
                )
                return
            if remaining <= 0:
                raise CannotComplete(
                    f"an import got no answer and the list holds {count} of {wanted} contacts"
                )
            pause(self.clock, min(delay, remaining), self.ctx.stop)
            delay = min(delay * 2, LINKS_MAX_DELAY)
            self._between_steps()

    def _resume_import(self, row: ListRecord) -> None:
        if self._import_in_doubt(row) or row.import_id is None:
            # the last part's answer was lost, or a crash came between parts: the count tells
            self._await_contact_count(row, row.size)
            self._advance(row, ListState.IMPORTED)
            return
        status = self._wait_for_import(row, row.import_id)
        # The poll answer has no ``unprocessed`` (only the lost 202 had): expect every slot
        # but the failed ones, and let the links wait settle the rest.
        self.expected_links[row.id] = row.size - status.failed
        self._advance(row, ListState.IMPORTED)

    def _wait_for_import(self, row: ListRecord, import_id: str) -> ImportStatus:
        try:
            return self.client.wait_for_import(
                _known(row.mailing_list_id), import_id, timeout=IMPORT_TIMEOUT
            )
        except ImportFailed as exc:
            raise CannotComplete(str(exc)) from None

    def _distribute(self, row: ListRecord) -> None:
        expires_at = (self.clock.now() + self.pool.link_ttl).replace(microsecond=0)
        self._advance(row, ListState.IMPORTED, expires_at=expires_at)
        try:
            distribution_id = self.client.create_link_distribution(
                survey_id=row.survey_id,
                mailing_list_id=_known(row.mailing_list_id),
                description=row.name,
                expires_at=expires_at,
            )
        except (BadRequest, NotFound) as exc:
            raise _survey_refused(exc, row.survey_id) from None
        except OutcomeUnknown:
            found = self._find_distributions(row.survey_id, {row.name})
            if row.name not in found:
                raise CannotComplete(
                    "creating the distribution got no answer and none of its description exists"
                ) from None
            distribution_id = found[row.name]
        self._advance(row, ListState.DISTRIBUTED, distribution_id=distribution_id)

    def _store_links(self, row: ListRecord) -> None:
        """Read the links until every contact has one or ``links_wait`` is over; then store
        them and mark the list ready, in one transaction."""
        slots = {slot_key(row.name, index) for index in range(row.size)}
        expected = self.expected_links.get(row.id, row.size)
        deadline = self.clock.monotonic() + self.ctx.links_wait.total_seconds()
        delay = LINKS_FIRST_DELAY
        reads = 0
        while True:
            links, skipped = self._read_links(row, slots)
            reads += 1
            remaining = deadline - self.clock.monotonic()
            if len(links) + skipped >= expected or remaining <= 0 or reads >= LINKS_MAX_READS:
                break
            logger.info(
                "refill %s: list %d has %d of %d links so far; reading again in %.0fs",
                self.pool.name,
                row.id,
                len(links) + skipped,
                expected,
                min(delay, remaining),
            )
            pause(self.clock, min(delay, remaining), self.ctx.stop)
            delay = min(delay * 2, LINKS_MAX_DELAY)
            self._between_steps()
        links = with_directory_contacts(self.client, _known(row.mailing_list_id), links)
        shortfall = row.size - len(links)
        if not self.store.finish_list(
            row.id, self.pool.name, links, now=self.clock.now(), shortfall=shortfall
        ):
            raise ListTaken()
        if shortfall:
            logger.warning(
                "refill %s: list %d stored with %d of %d links (%d skipped for contact frequency)",
                self.pool.name,
                row.id,
                len(links),
                row.size,
                skipped,
            )
        with self._lock:
            self.report.lists_ready += 1
            self.report.links_added += len(links)
            self.report.links_missing += shortfall

    def _read_links(self, row: ListRecord, slots: set[str]) -> tuple[list[NewLink], int]:
        """The usable links of a list's slots, and how many were skipped for contact frequency."""
        elements = self.client.iter_links(_known(row.distribution_id), row.survey_id)
        return links_of(elements, slots, row.expires_at)

    # --- failure ---

    def _abandon(self, list_id: int, error: Exception) -> None:
        """Delete what the list made on Qualtrics and mark it failed (gc retries a deletion
        that fails here)."""
        row = self.store.get_list(list_id)
        deleted = self._delete_on_qualtrics(row)
        now = self.clock.now()
        self.store.advance_list(
            list_id,
            expected_state=row.state,
            now=now,
            state=ListState.FAILED,
            last_error=str(error),
            deleted_at=now if deleted else None,
        )
        with self._lock:
            self.report.lists_failed += 1
        if isinstance(error, CannotComplete):
            # a lost answer, now settled: the list is replaced, the run has not failed
            logger.warning("refill %s: list %d abandoned: %s", self.pool.name, list_id, error)
        else:
            self._error(error, list_id)

    def _leave_for_operator(self, list_id: int, error: LeftForOperator) -> None:
        """Mark the list failed with what the operator must check; delete nothing (its id is
        unknown) and report the run as failed."""
        row = self.store.get_list(list_id)
        self.store.advance_list(
            list_id,
            expected_state=row.state,
            now=self.clock.now(),
            state=ListState.FAILED,
            last_error=str(error),
        )
        with self._lock:
            self.report.lists_failed += 1
        self._error(error, list_id)

    def _delete_on_qualtrics(self, row: ListRecord) -> bool:
        if self.ctx.purge_contacts and row.mailing_list_id is not None:
            try:  # before the list goes: it is the only record of these contacts
                self.client.purge_list_contacts(row.mailing_list_id)
            except NotFound:
                pass  # the list is gone already
            except QualtricsError as exc:
                logger.warning(
                    "refill %s: list %d's contacts stay for gc: %s", row.pool, row.id, exc
                )
                return False  # keep the list, so gc can still find its contacts
        deletions = (
            (self.client.delete_distribution, row.distribution_id),
            (self.client.delete_mailing_list, row.mailing_list_id),
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
                logger.warning("refill %s: could not delete %s: %s", row.pool, qualtrics_id, exc)
        return deleted

    # --- bookkeeping ---

    def _between_steps(self) -> None:
        """Stop here if asked to, or if the lease is no longer ours (LeaseLost); the heartbeat
        renews it meanwhile."""
        if self.ctx.stop.is_set():
            raise Stopped()
        self.lease.check()

    def _advance(self, row: ListRecord, state: str, **values: Any) -> None:
        moved = self.store.advance_list(
            row.id, expected_state=row.state, now=self.clock.now(), state=state, **values
        )
        if not moved:
            raise ListTaken()

    def _lease_lost(self, error: LeaseLost) -> None:
        """Every list worker stops on a lost lease: the pool reports the first only."""
        with self._lock:
            first = not self._lease_lost_reported
            self._lease_lost_reported = True
        if first:
            self._error(error)

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
    """The distribution refused a survey (deactivated since the run's check, or a resumed
    list's that no check of this run asked about): say which setting to fix."""
    return with_message(
        error,
        f"Qualtrics refused to make links for survey {survey_id}: check the pool's survey_id "
        "and that the survey is active",
    )


def _known(qualtrics_id: str | None) -> str:
    """An id the list's state says was recorded (``list_created`` on: its mailing list id;
    ``distributed`` on: its distribution id)."""
    if qualtrics_id is None:
        raise CannotComplete("the list's state says it exists on Qualtrics but no id was recorded")
    return qualtrics_id


__all__ = ["LINKS_MAX_READS", "LINKS_WAIT", "PoolRefill", "Progress", "ProgressTotals", "RefillRun"]
