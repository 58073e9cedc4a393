"""Provision lists on the simulator and record them as refill would, stopping at any state.

gc and sync tests need real lists, distributions and links on the simulator, and lists left in
every state a crashed or failed provisioning can leave behind.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from linkpool.clock import Clock
from linkpool.models import ListState
from linkpool.qualtrics.client import QualtricsClient
from linkpool.refill.links import links_of, with_directory_contacts
from linkpool.store import Store

SURVEY_ID = "SV_SimSurvey0001"
_ORDER = (
    ListState.PLANNED,
    ListState.LIST_CREATED,
    ListState.IMPORTED,
    ListState.DISTRIBUTED,
    ListState.READY,
)


def provision_list(
    client: QualtricsClient,
    store: Store,
    clock: Clock,
    *,
    pool: str = "nps",
    size: int = 3,
    ttl: timedelta = timedelta(days=10),
    survey_id: str = SURVEY_ID,
    until: str = ListState.READY,
    failed: bool = False,
) -> int:
    """Create a list with ``size`` placeholders and a distribution expiring ``ttl`` from now,
    recording each step in the store, up to ``until``; ``failed`` marks it failed there.
    Returns the list's row id."""
    name = f"linkpool/{pool}/{uuid.uuid4()}"
    list_id = store.create_list(
        pool=pool, survey_id=survey_id, name=name, size=size, now=clock.now()
    )
    steps = _ORDER[1 : _ORDER.index(until) + 1]
    mailing_list_id = distribution_id = None
    for step in steps:
        if step == ListState.LIST_CREATED:
            mailing_list_id = client.create_mailing_list(name)
            store.update_list(list_id, now=clock.now(), state=step, mailing_list_id=mailing_list_id)
        elif step == ListState.IMPORTED:
            contacts = [{"extRef": f"{name}#{n}"} for n in range(size)]
            job = client.start_import(mailing_list_id, contacts)
            client.wait_for_import(mailing_list_id, job.id, poll_interval=0.1)
            store.update_list(list_id, now=clock.now(), state=step, import_id=job.id)
        elif step == ListState.DISTRIBUTED:
            expires_at = clock.now() + ttl
            distribution_id = client.create_link_distribution(
                survey_id=survey_id,
                mailing_list_id=mailing_list_id,
                description=name,
                expires_at=expires_at.replace(microsecond=0),
            )
            store.update_list(
                list_id,
                now=clock.now(),
                state=step,
                distribution_id=distribution_id,
                expires_at=expires_at.replace(microsecond=0),
            )
        else:
            _store_links(client, store, clock, list_id, pool)
    if failed:
        store.update_list(list_id, now=clock.now(), state=ListState.FAILED, last_error="test")
    return list_id


def _store_links(
    client: QualtricsClient, store: Store, clock: Clock, list_id: int, pool: str
) -> None:
    row = store.get_list(list_id)
    assert row.distribution_id is not None and row.expires_at is not None
    assert row.mailing_list_id is not None
    elements = list(client.iter_links(row.distribution_id, row.survey_id))
    slots = {element["externalDataReference"] for element in elements}
    found, _ = links_of(elements, slots, row.expires_at)
    new_links = with_directory_contacts(client, row.mailing_list_id, found)
    assert store.finish_list(list_id, pool, new_links, now=clock.now(), shortfall=0)
