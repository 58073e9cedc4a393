"""Refill: keep every pool stocked with ready personal links, surviving a crash at any point.

For each pool, under the lease ``refill:<pool>`` (so one process at a time works on a pool):

1. finish or abandon the lists an earlier run left unfinished;
2. if fewer than ``low_water`` links are claimable, provision
   ``ceil((target_available - claimable) / list_size)`` new lists, concurrently, and again for
   what abandoned lists left missing, until the pool is at ``target_available`` or the run's
   bounds (``[refill] max_lists_per_run``, ``max_calls_per_run``) are reached. A pool left
   below ``low_water`` is reported as an error (exit 1).

Before a run creates its first mailing list for a survey, it asks Qualtrics about the survey
once (``GET /surveys/{surveyId}``): one that is not found or not active fails the pool in one
line (exit 1) and nothing is created for it (planned rows stay planned, other lists carry on);
one whose ``isActive`` Qualtrics does not give is provisioned. A run that creates no list asks
nothing.

A list moves planned → creating → list_created → importing → imported → distributed → ready. Its row is
written before and after every API call, so a run that dies anywhere leaves a row saying what may
exist on Qualtrics, and the next run picks up from there:

- ``planned``: the list is created (nothing was sent for it yet);
- ``creating``: the create was sent (the state is written before the POST) and its answer may
  be lost: the list is looked up by its unique name, walking the directory's listing, and
  created again only if the listing showed every list without it. A listing at Qualtrics'
  10,000-list cap proves nothing: the list is then marked failed for the operator to check;
- ``list_created``: the contacts are imported;
- ``importing``: the import is awaited by its stored id. Without an id (the POST's answer was
  lost) or midway through an import of several parts, the list's contact count
  (``includeCount=true``) says whether the contacts went in; if not, the list is abandoned;
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

The package, one concern a module: ``naming`` (list names, slot keys, the lease; gc reads them),
``requests`` (the bodies sent), ``estimate`` (the low-water rule and the dry run), ``survey``
(the survey check), ``reports``, ``failures`` and ``machine`` (the state machine). This module runs them and is the job.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from linkpool.clock import Clock
from linkpool.config import PoolSettings, Settings
from linkpool.errors import UnknownPool
from linkpool.job import JobContext
from linkpool.qualtrics.client import QualtricsClient
from linkpool.refill.ceiling import ListCeiling
from linkpool.refill.estimate import dry_run as dry_run_pool
from linkpool.refill.estimate import estimate_calls, lists_needed
from linkpool.refill.machine import (
    LINKS_WAIT,
    PoolRefill,
    Progress,
    ProgressTotals,
    RefillRun,
)
from linkpool.refill.naming import list_name_prefix, new_list_name, refill_lease_name, slot_key
from linkpool.refill.reports import PoolReport, RefillReport
from linkpool.refill.requests import (
    MAX_IMPORT_BYTES,
    MAX_IMPORT_CONTACTS,
    import_batches,
    placeholder_contacts,
)
from linkpool.store import Store


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
        bound = settings.refill.max_lists_per_run
        reports = [dry_run_pool(store, clock, pool_settings, bound) for pool_settings in pools]
        return RefillReport(reports, dry_run=True, duration_s=clock.monotonic() - started)
    if client is None:
        raise ValueError("refill needs a Qualtrics client unless dry_run is set")
    qualtrics = settings.require_qualtrics()
    client.verify_host()
    run = RefillRun(
        client=client,
        store=store,
        clock=clock,
        progress=ProgressTotals(progress),
        workers=qualtrics.max_concurrency,
        list_prefix=qualtrics.list_prefix,
        links_wait=links_wait,
        stop=stop or threading.Event(),
        bounds=settings.refill,
        ceiling=ListCeiling(client, qualtrics.list_headroom),
        purge_contacts=settings.gc.purge_contacts,
    )
    with ThreadPoolExecutor(max_workers=run.workers, thread_name_prefix="refill") as executor:
        futures = [executor.submit(PoolRefill(run, settings).run) for settings in pools]
        reports = [future.result() for future in futures]
    return RefillReport(reports, duration_s=clock.monotonic() - started)


def _selected_pools(settings: Settings, name: str | None) -> list[PoolSettings]:
    if name is None:
        return list(settings.pools.values())
    if name not in settings.pools:
        raise UnknownPool(name, list(settings.pools))
    return [settings.pools[name]]


class RefillJob:
    """``refill`` as a scheduled job: every pool, each under its own lease."""

    name = "refill"
    lock = refill_lease_name("<pool>")
    default_interval = timedelta(minutes=5)

    def run(self, context: JobContext, stop: threading.Event) -> RefillReport:
        return refill(
            context.settings, context.require_client(), context.store, context.clock, stop=stop
        )


REFILL_JOB = RefillJob()

__all__ = [
    "LINKS_WAIT",
    "MAX_IMPORT_BYTES",
    "MAX_IMPORT_CONTACTS",
    "REFILL_JOB",
    "PoolReport",
    "Progress",
    "RefillJob",
    "RefillReport",
    "estimate_calls",
    "import_batches",
    "list_name_prefix",
    "lists_needed",
    "new_list_name",
    "placeholder_contacts",
    "refill",
    "refill_lease_name",
    "slot_key",
]
