"""The low-water rule, and the dry run: what a refill would do now, reading the database only."""

from __future__ import annotations

import math
from collections import Counter

from linkpool.clock import Clock
from linkpool.config import DEFAULT_LIST_PREFIX, PoolSettings
from linkpool.models import ListState
from linkpool.qualtrics.endpoints import (
    CREATE_DISTRIBUTION,
    CREATE_MAILING_LIST,
    GET_IMPORT,
    GET_SURVEY,
    LIST_CONTACTS,
    LIST_LINKS,
    LIST_MAILING_LISTS,
    MAX_CONTACTS_PAGE_SIZE,
    START_IMPORT,
)
from linkpool.refill.naming import new_list_name
from linkpool.refill.reports import PoolReport
from linkpool.refill.requests import import_batches, placeholder_contacts
from linkpool.store import Store

LINKS_PAGE_SIZE_GUESS = 100
"""Only for ``--dry-run`` estimates: the links listing's page size is not documented."""


def lists_needed(pool: PoolSettings, claimable: int) -> int:
    """The low-water rule: nothing while ``claimable >= low_water``; below it, enough lists to
    bring the pool back to ``target_available``."""
    if claimable >= pool.low_water:
        return 0
    return math.ceil((pool.target_available - claimable) / pool.list_size)


def lists_to_target(pool: PoolSettings, claimable: int) -> int:
    """Lists that bring ``claimable`` to ``target_available`` (once a refill was triggered)."""
    return max(0, math.ceil((pool.target_available - claimable) / pool.list_size))


def estimate_calls(pool: PoolSettings, lists: int) -> Counter[str]:
    """About how many API calls provisioning ``lists`` new lists takes (for ``--dry-run``),
    keyed like ``QualtricsClient.calls``."""
    if not lists:
        return Counter()
    # The placeholders do not depend on the prefix: slot_key keeps only the name's random part.
    name = new_list_name(DEFAULT_LIST_PREFIX, pool.name)
    contacts = placeholder_contacts(name, pool.list_size, pool.embedded_data)
    imports = len(import_batches(contacts))
    per_list = {
        CREATE_MAILING_LIST: 1,
        START_IMPORT: imports,
        GET_IMPORT: imports,
        CREATE_DISTRIBUTION: 1,
        LIST_LINKS: math.ceil(pool.list_size / LINKS_PAGE_SIZE_GUESS),
        # the links listing may give list entries (CGC_): one pass finds the contacts (CID_)
        LIST_CONTACTS: math.ceil(pool.list_size / MAX_CONTACTS_PAGE_SIZE),
    }
    calls = Counter({endpoint.key: count * lists for endpoint, count in per_list.items()})
    calls[LIST_MAILING_LISTS.key] += 1  # the ceiling check: a page of 100 lists at least
    calls[GET_SURVEY.key] += 1  # the survey check, once a run
    return calls


def dry_run(store: Store, clock: Clock, pool: PoolSettings, max_lists: int) -> PoolReport:
    """What a refill would do now, assuming unfinished lists complete: database reads only."""
    counts = store.counts(pool.name, clock.now(), pool.min_remaining)
    unfinished = store.lists_in_states(ListState.PROVISIONING, pool.name)
    pending = sum(row.size for row in unfinished)
    lists = min(lists_needed(pool, counts.claimable + pending), max_lists)
    return PoolReport(
        pool=pool.name,
        claimable_before=counts.claimable,
        claimable_after=counts.claimable,
        lists_resumed=len(unfinished),
        lists_planned=lists,
        links_planned=lists * pool.list_size,
        api_calls=estimate_calls(pool, lists),
    )


__all__ = ["dry_run", "estimate_calls", "lists_needed", "lists_to_target"]
