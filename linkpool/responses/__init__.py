"""``linkpool responses``: which claims were answered, and the claim's data on the response.

For each pool's survey, one run:

1. resumes what a killed run left: a bulk update job it started is polled again by its
   progress id; one whose POST had no recorded answer is *verified* (step 2 decides);
2. exports the responses recorded since the last run, less ``[responses] overlap`` (and
   back to the oldest claim to verify), through the async export API; the export's progress
   id is stored before polling, so a killed run polls the same export again;
3. streams the zip (``linkpool.responses.stream``) and joins each response on its
   ``externalDataReference``, the placeholder's ``extRef``: a claimed link gets the response
   id, ``finished`` and the recorded time; a response on a link nobody claimed is counted
   (once, by response id) and never attached to a recipient; a response that already carries
   the claim's data (the contact write-back got there first) needs no update;
4. puts the data of every answered claim still missing it onto its response, thousands per
   bulk ``update-responses`` job; a refused or failed job falls back to one
   ``PUT /responses/{id}`` each.

Every step writes before it calls and after it hears back, so a run killed anywhere leaves a
state the next run finishes; a second run over the same responses writes nothing and sends no
update. ``stop`` is honoured between steps and between polls.
"""

from __future__ import annotations

import json
import logging
import tempfile
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import islice

from linkpool.clock import Clock
from linkpool.config import PoolSettings, Settings
from linkpool.errors import AuthError, BadRequest, NotFound, OutcomeUnknown, QualtricsError
from linkpool.job import JobContext, JobReport
from linkpool.lease import Lease
from linkpool.models import Enrichment, LinkStatus, UpdateState
from linkpool.qualtrics.client import JobProgress, QualtricsClient
from linkpool.responses.stream import SPOOL_IN_MEMORY, ExportedResponse, iter_export
from linkpool.store import (
    AnsweredLink,
    EnrichmentItem,
    ResponseChange,
    Store,
    StrayResponse,
    UpdateRecord,
)
from linkpool.sync import claim_embedded_data

logger = logging.getLogger("linkpool.responses")

LEASE_NAME = "responses"
JOIN_BATCH = 500


@dataclass
class ResponsesReport(JobReport):
    responses_read: int = 0
    answered: int = 0  # claims that got (or changed) their response in this run
    unclaimed: int = 0  # new responses on links nobody claimed
    foreign: int = 0  # responses on links that are not this pool's (anonymous link, other tool)
    enriched: int = 0
    enrichment_unknown: int = 0  # sent, answer lost: verified by the next export
    enrichment_failed: int = 0
    api_calls: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)

    def summary_parts(self) -> list[str]:
        return [
            f"read {self.responses_read}",
            f"answered {self.answered}",
            f"unclaimed {self.unclaimed}",
            f"enriched {self.enriched}",
        ]


class ResponsesJob:
    """``responses`` as a scheduled job."""

    name = "responses"
    lock = LEASE_NAME
    default_interval = timedelta(minutes=10)

    def run(self, context: JobContext, stop: threading.Event) -> ResponsesReport:
        return track_responses(
            context.settings, context.require_client(), context.store, context.clock, stop=stop
        )


RESPONSES_JOB = ResponsesJob()


def track_responses(
    settings: Settings,
    client: QualtricsClient,
    store: Store,
    clock: Clock,
    *,
    pool_name: str | None = None,
    stop: threading.Event | None = None,
) -> ResponsesReport:
    """One run over every pool (or ``pool_name``). Raises LeaseHeld when another run holds
    the lock, and AuthError when Qualtrics refuses the token; a pool's other failures are
    reported in ``errors`` and leave a state the next run resumes."""
    report = ResponsesReport()
    stop = stop or threading.Event()
    pools = [p for p in settings.pools.values() if pool_name in (None, p.name)]
    with (
        Lease(store, LEASE_NAME, clock) as lease,
        client.tally(report.api_calls),
        client.guarded(lease.check),  # no call once the lease is lost
    ):
        fenced = store.fenced(lease.fence())  # and no write
        for pool in pools:
            if stop.is_set():
                break
            tracker = PoolTracker(settings, pool, client, fenced, clock, report, stop, lease)
            try:
                tracker.run()
            except AuthError:
                raise
            except QualtricsError as exc:
                report.errors.append(f"pool {pool.name}: {exc}")
                logger.warning("responses of pool %s: %s", pool.name, exc)
    return report


class PoolTracker:
    """One pool's run: resume, export and join, enrich."""

    def __init__(
        self,
        settings: Settings,
        pool: PoolSettings,
        client: QualtricsClient,
        store: Store,
        clock: Clock,
        report: ResponsesReport,
        stop: threading.Event,
        lease: Lease,
    ) -> None:
        self.pool = pool
        self.options = settings.responses
        self.recipient_field = settings.sync.recipient_field
        self.client = client
        self.store = store
        self.clock = clock
        self.report = report
        self.stop = stop
        self.lease = lease

    def run(self) -> None:
        self.resume_updates()
        for step in (self.track, self.enrich):
            if self.stop.is_set():
                return
            step()
            self.lease.check()

    # --- 1. what a killed run left ------------------------------------------------------

    def resume_updates(self) -> None:
        for update in self.store.unfinished_updates(self.pool.name):
            if update.state == UpdateState.SENDING or update.progress_id is None:
                self.report.enrichment_unknown += self.store.finish_update(
                    update.id, UpdateState.UNKNOWN, now=self.clock.now()
                )
            else:
                self.await_update(update)

    def await_update(self, update: UpdateRecord) -> None:
        assert update.progress_id is not None
        progress_id = update.progress_id
        progress = self.wait(
            lambda: self.client.get_response_update(self.pool.survey_id, progress_id)
        )
        if progress is None:
            return  # still running (or stopped): the next run polls it again
        if progress.complete:
            self.report.enriched += self.store.finish_update(
                update.id, UpdateState.COMPLETE, now=self.clock.now()
            )
        else:
            self.store.finish_update(
                update.id, UpdateState.FAILED, now=self.clock.now(), error="the bulk job failed"
            )
            self.send_one_by_one()

    # --- 2 and 3. export and join -------------------------------------------------------

    def track(self) -> None:
        cursor = self.store.ensure_cursor(self.pool.name, self.pool.survey_id, now=self.clock.now())
        progress_id, requested_at = cursor.export_progress_id, cursor.export_requested_at
        if progress_id is None or requested_at is None:
            start = self.export_start(cursor.recorded_until)
            if start is None:
                return  # the pool has no list yet: nothing can have been answered
            requested_at = self.clock.now()
            progress_id = self.client.start_response_export(self.pool.survey_id, start=start)
            self.store.record_export_started(
                self.pool.name, progress_id=progress_id, start=start, requested_at=requested_at
            )
        known_id = progress_id
        try:
            progress = self.wait(
                lambda: self.client.get_response_export(self.pool.survey_id, known_id)
            )
        except NotFound:
            progress = JobProgress("failed", 0.0)  # the export expired at Qualtrics
        if progress is None:
            return
        if not progress.complete or progress.file_id is None:
            self.store.finish_export(self.pool.name, recorded_until=None, now=self.clock.now())
            raise QualtricsError(f"the response export {progress_id} failed; the next run retries")
        self.read_export(progress.file_id)
        self.store.finish_export(self.pool.name, recorded_until=requested_at, now=self.clock.now())

    def export_start(self, recorded_until: datetime | None) -> datetime | None:
        """Where the next export begins: the last one's end less the overlap, or the first
        list; never after the oldest claim whose enrichment is to be verified."""
        starts = [self.store.first_list_created(self.pool.name)]
        if recorded_until is not None:
            starts = [recorded_until - self.options.overlap]
        floor = self.store.verify_floor(self.pool.name)
        if floor is not None:
            starts.append(floor - self.options.overlap)
        known = [start for start in starts if start is not None]
        return min(known) if known else None

    def read_export(self, file_id: str) -> None:
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY) as spool:
            self.client.download_response_export(self.pool.survey_id, file_id, spool)
            for batch in batched(iter_export(spool), JOIN_BATCH):
                self.join(batch)

    def join(self, batch: list[ExportedResponse]) -> None:
        self.report.responses_read += len(batch)
        found = {
            link.ext_ref: link
            for link in self.store.links_by_ext_ref(r.ext_ref for r in batch if r.ext_ref)
            if link.pool == self.pool.name
        }
        changes: list[ResponseChange] = []
        strays: list[StrayResponse] = []
        for response in batch:
            link = found.get(response.ext_ref or "")
            if link is None:
                self.report.foreign += 1
            elif link.status != LinkStatus.CLAIMED:
                strays.append(
                    StrayResponse(
                        response.response_id,
                        self.pool.name,
                        link.ext_ref,
                        link.status,
                        response.recorded_at,
                    )
                )
            elif link.response_id in (None, response.response_id):
                change = self.change_for(link, response)
                if change is not None:
                    changes.append(change)
            else:
                logger.warning(
                    "link %s has response %s; ignoring a second one, %s",
                    link.id,
                    link.response_id,
                    response.response_id,
                )
        self.store.record_responses(changes)
        self.report.answered += sum(1 for c in changes if c.link_id not in _answered(found))
        self.report.unclaimed += self.store.record_strays(strays, now=self.clock.now())

    def change_for(self, link: AnsweredLink, response: ExportedResponse) -> ResponseChange | None:
        """What the response changes on its claim; None when nothing (a repeat)."""
        enrichment = self.enrichment_after(link, response)
        change = ResponseChange(
            link.id, response.response_id, response.finished, response.recorded_at, enrichment
        )
        unchanged = (
            link.response_id == change.response_id
            and bool(link.response_finished) == change.finished
            and link.responded_at == change.responded_at
            and link.enrichment == (None if enrichment is None else str(enrichment))
        )
        return None if unchanged else change

    def enrichment_after(self, link: AnsweredLink, response: ExportedResponse) -> Enrichment | None:
        current = Enrichment(link.enrichment) if link.enrichment is not None else None
        if link.erased_at is not None:
            return None if current in (None, Enrichment.PENDING, Enrichment.VERIFY) else current
        if not self.pool.enriches_responses or current in (
            Enrichment.DONE,
            Enrichment.FAILED,
            Enrichment.SENDING,
        ):
            return current
        wanted = self.embedded_data(link.data, link.recipient or "")
        if all(str(response.values.get(name, "")) == value for name, value in wanted.items()):
            return Enrichment.DONE
        return Enrichment.PENDING

    # --- 4. enrichment ------------------------------------------------------------------

    def enrich(self) -> None:
        if not self.pool.enriches_responses:
            return
        while not self.stop.is_set():
            items = self.store.pending_enrichments(self.pool.name, limit=self.options.batch_size)
            if not items or not self.send_bulk(items):
                return
            self.lease.check()

    def send_bulk(self, items: list[EnrichmentItem]) -> bool:
        """One bulk job for ``items``; True when the next batch may follow."""
        now = self.clock.now()
        update_id = self.store.start_update(
            self.pool.name, self.pool.survey_id, [item.id for item in items], now=now
        )
        updates = [
            {
                "responseId": item.response_id,
                "embeddedData": self.embedded_data(item.data, item.recipient),
            }
            for item in items
        ]
        try:
            progress_id = self.client.start_response_update(self.pool.survey_id, updates)
        except OutcomeUnknown:
            self.report.enrichment_unknown += self.store.finish_update(
                update_id, UpdateState.UNKNOWN, now=self.clock.now()
            )
            return False  # the next export tells whether it landed
        except BadRequest as exc:
            self.store.finish_update(
                update_id, UpdateState.FAILED, now=self.clock.now(), error=str(exc)
            )
            self.send_one_by_one()
            return False
        self.store.update_running(update_id, progress_id, now=self.clock.now())
        self.await_update(
            UpdateRecord(
                update_id, self.pool.name, self.pool.survey_id, progress_id, UpdateState.RUNNING
            )
        )
        return not self.stop.is_set()

    def send_one_by_one(self) -> None:
        """The fallback of a refused or failed bulk job: ``PUT /responses/{id}`` each."""
        items = self.store.pending_enrichments(self.pool.name, limit=self.options.batch_size)
        for item in items:
            if self.stop.is_set():
                return
            data = self.embedded_data(item.data, item.recipient)
            try:
                self.client.update_response(self.pool.survey_id, item.response_id, data)
            except (BadRequest, NotFound) as exc:
                self.store.set_enrichment([item.id], Enrichment.FAILED, error=str(exc))
                self.report.enrichment_failed += 1
                continue
            self.store.set_enrichment([item.id], Enrichment.DONE)
            self.report.enriched += 1

    def embedded_data(self, data_text: str | None, recipient: str) -> dict[str, str]:
        data = json.loads(data_text) if data_text else {}
        return claim_embedded_data(self.pool, data, recipient, self.recipient_field)

    # --- polling ------------------------------------------------------------------------

    def wait(self, poll: Callable[[], JobProgress]) -> JobProgress | None:
        """Poll until the job is complete or failed; None when stopped or out of time."""
        deadline = self.clock.monotonic() + self.options.job_timeout
        while True:
            progress = poll()
            if progress.complete or progress.failed:
                return progress
            if self.stop.is_set() or self.clock.monotonic() >= deadline:
                if not self.stop.is_set():
                    self.report.errors.append(
                        f"pool {self.pool.name}: a job was still running after "
                        f"{self.options.job_timeout:g}s; the next run polls it again"
                    )
                return None
            self.clock.sleep(self.options.poll_interval)


def _answered(found: dict[str, AnsweredLink]) -> set[int]:
    return {link.id for link in found.values() if link.response_id is not None}


def batched(items: Iterator[ExportedResponse], size: int) -> Iterator[list[ExportedResponse]]:
    while batch := list(islice(items, size)):
        yield batch


__all__ = ["RESPONSES_JOB", "ResponsesJob", "ResponsesReport", "track_responses"]
