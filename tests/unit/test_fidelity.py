"""Issue 12, point by point: what a real brand does, in the simulator and in linkpool, both ways.

Each point runs against the simulator's default (the strongest evidence) and, where the evidence
is thin, against the other reading too (``Fidelity``), so linkpool is shown to cope with either.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
import respx
import sqlalchemy as sa

from linkpool.clock import ManualClock
from linkpool.config import PoolSettings, QualtricsSettings, Settings, SyncSettings
from linkpool.errors import BadRequest, ImportFailed, InvalidClaim, NotFound, WrongDatacenter
from linkpool.gc import collect
from linkpool.models import ListState, WriteBack, links, lists
from linkpool.pool import LinkPool
from linkpool.qualtrics.client import QualtricsClient, normal_link
from linkpool.qualtrics.endpoints import MAILING_LIST_LISTING_CAP, MAX_CONTACTS_PAGE_SIZE
from linkpool.refill import refill
from linkpool.refill.machine import LINKS_MAX_READS
from linkpool.simulator import Simulator
from linkpool.simulator.fidelity import Fidelity
from linkpool.simulator.state import MailingList
from linkpool.store import Store
from linkpool.sync import sync

SURVEY = "SV_SimSurvey0001"
RECIPIENT = SyncSettings().recipient_field
LINKS = "GET /distributions/{distributionId}/links"
CONTACTS = "GET /directories/{directoryId}/mailinglists/{mailingListId}/contacts"
CREATE_LIST = "POST /directories/{directoryId}/mailinglists"
GET_IMPORT = (
    "GET /directories/{directoryId}/mailinglists/{mailingListId}/transactioncontacts/{importId}"
)


def pool_settings(**overrides: Any) -> PoolSettings:
    values: dict[str, Any] = dict(
        name="nps",
        survey_id=SURVEY,
        target_available=120,
        low_water=60,
        list_size=120,
        link_ttl=timedelta(days=30),
        min_remaining=timedelta(days=1),
    )
    values.update(overrides)
    return PoolSettings(**values)


def make_settings(sim: Simulator, database_url: str, **qualtrics: Any) -> Settings:
    return Settings(
        database_url=database_url,
        qualtrics=QualtricsSettings(
            base_url=sim.base_url, directory_id=sim.directory_id, **qualtrics
        ),
        pools={"nps": pool_settings()},
        sync=SyncSettings(),
    )


def make_sim(clock: ManualClock, **fidelity: Any) -> Simulator:
    return Simulator(clock=clock, fidelity=Fidelity(**fidelity))


@pytest.fixture
def sim(clock: ManualClock) -> Simulator:
    return make_sim(clock)


@pytest.fixture
def client(sim: Simulator) -> Iterator[QualtricsClient]:
    with sim.client() as client:
        yield client


def link_rows(store: Store) -> list[dict[str, Any]]:
    with store.read() as connection:
        return [dict(row) for row in connection.execute(sa.select(links)).mappings()]


def list_rows(store: Store) -> list[dict[str, Any]]:
    with store.read() as connection:
        return [dict(row) for row in connection.execute(sa.select(lists)).mappings()]


def seed_directory(sim: Simulator, count: int) -> None:
    """``count`` lists made by someone else, straight into the simulated directory."""
    now = sim.clock.now()
    for index in range(count):
        mailing_list = MailingList(f"CG_seed{index:010d}", f"other/{index}", "UR_x", now, now)
        sim.brand.mailing_lists[mailing_list.id] = mailing_list


# --- 1. the links listing's contactId --------------------------------------------------------


@pytest.mark.parametrize("listed", ["lookup", "contact"])
def test_each_link_keeps_both_ids_whichever_the_listing_gives(
    clock: ManualClock, store: Store, sqlite_url: str, listed: str
) -> None:
    sim = make_sim(clock, links_contact_id=listed)
    with sim.client() as client:
        report = refill(make_settings(sim, sqlite_url), client, store, clock)

    rows = link_rows(store)
    assert len(rows) == 120
    assert all(row["contact_id"].startswith("CID_") for row in rows)
    assert all(row["contact_lookup_id"].startswith("CGC_") for row in rows)
    (mailing_list,) = sim.mailing_lists().values()
    assert {row["contact_id"]: row["contact_lookup_id"] for row in rows} == mailing_list[
        "lookupIds"
    ]
    passes = math.ceil(120 / MAX_CONTACTS_PAGE_SIZE) if listed == "lookup" else 0
    assert report.pools[0].api_calls[CONTACTS] == passes


def test_a_contact_update_addressed_to_the_list_entry_is_not_found(
    sim: Simulator, client: QualtricsClient, store: Store, sqlite_url: str, clock: ManualClock
) -> None:
    refill(make_settings(sim, sqlite_url), client, store, clock)
    row = link_rows(store)[0]
    (mailing_list_id,) = sim.mailing_lists()

    with pytest.raises(NotFound):
        client.update_contact(mailing_list_id, row["contact_lookup_id"], {"embeddedData": {}})
    client.update_contact(mailing_list_id, row["contact_id"], {"embeddedData": {"a": "b"}})


def test_sync_finds_the_directory_contact_of_a_link_stored_with_its_list_entry(
    sim: Simulator, client: QualtricsClient, store: Store, sqlite_url: str, clock: ManualClock
) -> None:
    settings = make_settings(sim, sqlite_url)
    refill(settings, client, store, clock)
    with store.write() as connection:  # as an earlier linkpool stored what the listing gave
        connection.execute(sa.update(links).values(contact_id=links.c.contact_lookup_id))
    pool = LinkPool.from_settings(settings, clock=clock, engine=store.engine)
    claims = [pool.claim("nps", recipient=f"cust-{n}") for n in range(3)]

    report = sync(settings, client, store, clock)

    assert report.written == 3
    assert report.api_calls[CONTACTS] == math.ceil(120 / MAX_CONTACTS_PAGE_SIZE)  # one pass
    rows = {row["id"]: row for row in link_rows(store)}
    for claim in claims:
        contact_id = rows[claim.link_id]["contact_id"]
        assert contact_id.startswith("CID_")
        assert sim.contact(contact_id)["embeddedData"][RECIPIENT] == claim.recipient
        assert rows[claim.link_id]["writeback"] == WriteBack.DONE


# --- 2. expirationDate -----------------------------------------------------------------------


@pytest.mark.parametrize("zone", ["America/Chicago", "Asia/Tokyo", "UTC"])
def test_links_expire_when_refill_meant_whatever_the_account_zone(
    clock: ManualClock, store: Store, sqlite_url: str, zone: str
) -> None:
    sim = make_sim(clock, account_time_zone=zone)
    with sim.client() as client:
        refill(make_settings(sim, sqlite_url), client, store, clock)

    (distribution,) = sim.distributions().values()
    meant = (clock.now() + timedelta(days=30)).replace(microsecond=0)
    assert distribution["expirationDate"] == meant
    assert {row["expires_at"] for row in link_rows(store)} == {meant}


# --- 3. a wrong datacenter -------------------------------------------------------------------


def test_a_proxied_brand_stops_refill_gc_and_sync_naming_the_right_host(
    clock: ManualClock, store: Store, sqlite_url: str
) -> None:
    sim = make_sim(clock, proxied_to="sjc1.qualtrics.com")
    settings = make_settings(sim, sqlite_url)
    for job in (refill, collect, sync):
        with sim.client() as client, pytest.raises(WrongDatacenter) as caught:
            job(settings, client, store, clock)
        assert "https://sjc1.qualtrics.com/API/v3" in str(caught.value)
    assert sim.calls[CREATE_LIST] == 0
    assert list_rows(store) == []


def test_another_notice_is_logged_and_the_job_goes_on(
    clock: ManualClock, store: Store, sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    sim = make_sim(clock, notice="This API version is deprecated.")
    with sim.client() as client, caplog.at_level(logging.WARNING, "linkpool.qualtrics"):
        report = refill(make_settings(sim, sqlite_url), client, store, clock)
    assert report.exit_code == 0
    assert "This API version is deprecated." in caplog.text


def test_the_host_is_checked_once_per_client(
    sim: Simulator, client: QualtricsClient, store: Store, sqlite_url: str, clock: ManualClock
) -> None:
    settings = make_settings(sim, sqlite_url)
    for _ in range(3):
        sync(settings, client, store, clock)
    assert sim.calls["GET /whoami"] == 1


# --- 4. import polling -----------------------------------------------------------------------


def test_a_failed_import_ends_the_wait_at_once_and_its_list_is_abandoned(
    sim: Simulator, client: QualtricsClient, store: Store, sqlite_url: str, clock: ManualClock
) -> None:
    sim.faults.import_failure_rate = 1.0

    report = refill(make_settings(sim, sqlite_url), client, store, clock)

    pool = report.pools[0]
    assert pool.lists_failed == pool.lists_planned > 0
    assert pool.api_calls[GET_IMPORT] == pool.lists_planned  # one poll each, no 600 s wait
    assert all(row["state"] == ListState.FAILED for row in list_rows(store))
    assert all("failed" in row["last_error"] for row in list_rows(store))
    assert sim.mailing_lists() == {}  # deleted again on Qualtrics
    assert link_rows(store) == []


def test_a_failed_import_status_raises_import_failed(
    sim: Simulator, client: QualtricsClient
) -> None:
    sim.faults.import_failure_rate = 1.0
    mailing_list_id = client.create_mailing_list("x")
    job = client.start_import(mailing_list_id, [{"extRef": "a"}])
    started = sim.clock.monotonic()
    with pytest.raises(ImportFailed, match="status 'failed'"):
        client.wait_for_import(mailing_list_id, job.id, timeout=600)
    assert sim.calls[GET_IMPORT] == 1
    assert sim.clock.monotonic() == started  # no poll interval slept


@pytest.mark.parametrize("as_objects", [False, True])
def test_refused_contacts_are_counted_whether_indexes_or_objects(
    clock: ManualClock, as_objects: bool
) -> None:
    sim = make_sim(clock, unprocessed_as_objects=as_objects)
    with sim.client() as client:
        mailing_list_id = client.create_mailing_list("x")
        job = client.start_import(
            mailing_list_id,
            [{"extRef": "a"}, {"extRef": "b", "email": "not-an-address"}, {"extRef": "c"}],
        )
        status = client.wait_for_import(mailing_list_id, job.id)
    assert job.unprocessed == [1]
    assert status.added == 2
    assert status.status == "complete"


def test_unprocessed_objects_without_an_index_still_count() -> None:
    base = "https://iad1.qualtrics.com/API/v3"
    with respx.mock(base_url=base) as api:
        api.post("/directories/POOL_x/mailinglists/CG_1/transactioncontacts").mock(
            return_value=httpx.Response(
                202, json={"result": {"id": "PGR_1", "contacts": {"unprocessed": [{"r": 1}]}}}
            )
        )
        with QualtricsClient(base_url=base, token="t", directory_id="POOL_x") as client:
            job = client.start_import("CG_1", [{"extRef": "a"}])
    assert job.unprocessed == [None]


@pytest.mark.parametrize(
    ("key", "accepted"),
    [("phone", False), ("privateEmbeddedData", False), ("transactionData", True)],
)
def test_import_contact_keys_are_the_documented_ones(
    sim: Simulator, client: QualtricsClient, key: str, accepted: bool
) -> None:
    value: Any = "+15550100" if key == "phone" else {"a": "b"}
    mailing_list_id = client.create_mailing_list("x")
    contacts = [{"extRef": "a", key: value}]
    if accepted:
        client.start_import(mailing_list_id, contacts)
    else:
        with pytest.raises(
            BadRequest, match=rf"Unexpected json key provided: contacts\[0\]\.{key}"
        ):
            client.start_import(mailing_list_id, contacts)


# --- 5. embedded-data limits -----------------------------------------------------------------


@pytest.fixture
def stocked(sim: Simulator, client: QualtricsClient, store: Store, sqlite_url: str, clock):
    settings = make_settings(sim, sqlite_url)
    refill(settings, client, store, clock)
    return LinkPool.from_settings(settings, clock=clock, engine=store.engine)


def stocked_settings(sim: Simulator, store: Store) -> Settings:
    return make_settings(sim, str(store.engine.url))


@pytest.mark.parametrize(
    ("data", "named", "limit"),
    [
        ({"k" * 201: "v"}, "kkkk", "200"),
        ({"note": "x" * 1001}, "'note'", "1000"),
        ({"items": ["x" * 500, "y" * 500]}, "'items'", "1000"),  # as written: JSON text
    ],
)
def test_claim_data_over_the_embedded_data_limits_is_refused_naming_the_key(
    stocked: LinkPool, data: dict[str, Any], named: str, limit: str
) -> None:
    before = stocked.counts("nps").claimable
    with pytest.raises(InvalidClaim) as caught:
        stocked.claim("nps", recipient="cust-1", data=data)
    assert named in str(caught.value) and limit in str(caught.value)
    assert stocked.counts("nps").claimable == before


def test_claim_data_at_the_limits_is_written_back(
    stocked: LinkPool, sim: Simulator, client: QualtricsClient, store: Store, clock
) -> None:
    data = {"k" * 200: "x" * 1000}
    claim = stocked.claim("nps", recipient="cust-1", data=data)
    assert sync(stocked_settings(sim, store), client, store, clock).written == 1
    assert sim.contact(claim.contact_id)["embeddedData"]["k" * 200] == "x" * 1000


@pytest.mark.parametrize(
    ("fields", "message"),
    [({"k" * 201: "v"}, "name longer than 200"), ({"k": "x" * 1025}, "longer than 1024")],
)
def test_the_simulator_refuses_embedded_data_over_the_directorys_limits(
    stocked: LinkPool, client: QualtricsClient, store: Store, fields: dict[str, str], message: str
) -> None:
    row = link_rows(store)[0]
    (mailing_list_id,) = {r["mailing_list_id"] for r in list_rows(store)}
    with pytest.raises(Exception, match=message):
        client.update_contact(mailing_list_id, row["contact_id"], {"embeddedData": fields})


# --- 6. when the respondent's data is read ---------------------------------------------------


def test_a_write_back_before_the_first_open_reaches_the_response(
    stocked: LinkPool, sim: Simulator, client: QualtricsClient, store: Store, clock
) -> None:
    claim = stocked.claim("nps", recipient="cust-1", data={"order": "A-1"})
    clock.advance(timedelta(seconds=30))  # the claim-to-open window: sync runs within it
    sync(stocked_settings(sim, store), client, store, clock)
    clock.advance(timedelta(seconds=30))
    assert sim.open_link(claim.url).ok
    clock.advance(timedelta(minutes=5))
    assert sim.respond(claim.url).ok

    (response,) = sim.responses()
    assert response.embedded_data[RECIPIENT] == "cust-1"
    assert response.embedded_data["order"] == "A-1"


def test_a_write_back_after_the_first_open_misses_the_response(
    stocked: LinkPool, sim: Simulator, client: QualtricsClient, store: Store, clock
) -> None:
    claim = stocked.claim("nps", recipient="cust-1", data={"order": "A-1"})
    assert sim.open_link(claim.url).ok  # the respondent is quicker than the write-back
    clock.advance(timedelta(seconds=30))
    assert sync(stocked_settings(sim, store), client, store, clock).written == 1
    assert sim.respond(claim.url).ok

    (response,) = sim.responses()
    assert RECIPIENT not in response.embedded_data
    assert sim.contact(claim.contact_id)["embeddedData"][RECIPIENT] == "cust-1"
    assert response.recorded_at - response.opened_at == timedelta(seconds=30)


def test_an_inline_write_back_beats_any_open(
    stocked: LinkPool, sim: Simulator, client: QualtricsClient, sqlite_url: str, clock
) -> None:
    settings = make_settings(sim, sqlite_url)
    with LinkPool.from_settings(settings, clock=clock, client=client) as pool:
        claim = pool.claim("nps", recipient="cust-1", sync=True)  # written before it returns
    assert sim.respond(claim.url).ok
    assert sim.responses()[0].embedded_data[RECIPIENT] == "cust-1"


# --- 7. malformed link URLs ------------------------------------------------------------------


def test_doubled_slashes_are_normalised_before_links_are_stored(
    clock: ManualClock, store: Store, sqlite_url: str
) -> None:
    sim = make_sim(clock, doubled_slash_links=True)
    with sim.client() as client:
        refill(make_settings(sim, sqlite_url), client, store, clock)
        (distribution_id,) = sim.distributions()
        elements = list(client.iter_links(distribution_id, SURVEY))
    assert sim.links(distribution_id)[0].replace(".com/", ".com//") != elements[0]["link"]
    assert all("//jfe" not in element["link"] for element in elements)
    rows = link_rows(store)
    assert rows and all(".qualtrics.com/jfe/form/" in row["url"] for row in rows)
    assert all(sim.check_link(row["url"]).ok for row in rows)
    assert not sim.check_link(rows[0]["url"].replace(".com/", ".com//")).ok


@pytest.mark.parametrize(
    ("url", "normal"),
    [
        (
            "https://sim1.qualtrics.com//jfe/form/SV_1?Q_DL=EMD_1_1_CGC_1&Q_CHL=gl",
            "https://sim1.qualtrics.com/jfe/form/SV_1?Q_DL=EMD_1_1_CGC_1&Q_CHL=gl",
        ),
        ("https://a.qualtrics.com/jfe//form/SV_1", "https://a.qualtrics.com/jfe/form/SV_1"),
        ("https://a.qualtrics.com/jfe/form/SV_1?u=http://x//y", None),
    ],
)
def test_normal_link(url: str, normal: str | None) -> None:
    assert normal_link(url) == (normal or url)


def test_a_stored_doubled_slash_link_is_never_handed_out_as_is(
    stocked: LinkPool, store: Store
) -> None:
    with store.write() as connection:
        connection.execute(
            sa.update(links).values(
                url=sa.func.replace(links.c.url, ".qualtrics.com/", ".qualtrics.com//")
            )
        )
    assert "//jfe" not in stocked.claim("nps", recipient="cust-1").url


# --- 8. reading links has a side effect ------------------------------------------------------


def test_links_are_read_once_when_complete_and_at_most_the_bound_when_not(
    clock: ManualClock, store: Store, sqlite_url: str
) -> None:
    sim = make_sim(clock)
    sim.links_page_size = 500
    with sim.client() as client:
        settings = make_settings(sim, sqlite_url)
        complete = refill(settings, client, store, clock).pools[0]
        assert complete.api_calls[LINKS] == complete.lists_ready == 1

    sim.faults.link_lag = timedelta(days=1)
    sim.faults.link_lag_fraction = 0.5
    with store.write() as connection:
        connection.execute(sa.update(links).values(status="void"))
    with sim.client() as client:
        short = refill(settings, client, store, clock, links_wait=timedelta(days=1)).pools[0]
    # each short list is read at most the bound (a run to target may take several lists)
    assert short.lists_ready >= 1
    assert short.api_calls[LINKS] == LINKS_MAX_READS * short.lists_ready
    assert short.links_missing > 0


# --- 9. the 10,000-list ceiling --------------------------------------------------------------


def test_the_listing_is_capped_but_creating_is_not(clock: ManualClock) -> None:
    sim = make_sim(clock, listing_cap=5)
    with sim.client() as client:
        ids = [client.create_mailing_list(f"l/{n}") for n in range(7)]
        listed = [element["mailingListId"] for element in client.iter_mailing_lists()]
    assert listed == ids[:5]
    assert len(sim.mailing_lists()) == 7


def creating_row(store: Store, clock: ManualClock, name: str) -> int:
    """A list whose create was sent and whose answer was lost (the run then died)."""
    list_id = store.create_list(pool="nps", survey_id=SURVEY, name=name, size=120, now=clock.now())
    store.advance_list(
        list_id, expected_state=ListState.PLANNED, now=clock.now(), state=ListState.CREATING
    )
    return list_id


def test_a_lost_create_is_found_by_name_across_pages(
    sim: Simulator, client: QualtricsClient, store: Store, sqlite_url: str, clock
) -> None:
    name = "linkpool/nps/0123456789abcdef0123456789abcdef"
    list_id = creating_row(store, clock, name)
    seed_directory(sim, 250)  # three pages of other lists before ours
    created = client.create_mailing_list(name)  # the create that took effect

    report = refill(make_settings(sim, sqlite_url), client, store, clock)

    assert report.exit_code == 0
    assert sim.calls[CREATE_LIST] == 1  # the one above: never created twice
    row = next(row for row in list_rows(store) if row["id"] == list_id)
    assert (row["state"], row["mailing_list_id"]) == (ListState.READY, created)
    assert client.find_mailing_list(name).seen == 251


def test_a_lost_create_that_did_not_happen_is_created_once(
    sim: Simulator, client: QualtricsClient, store: Store, sqlite_url: str, clock
) -> None:
    list_id = creating_row(store, clock, "linkpool/nps/00000000000000000000000000000000")
    refill(make_settings(sim, sqlite_url), client, store, clock)
    row = next(row for row in list_rows(store) if row["id"] == list_id)
    assert row["state"] == ListState.READY
    assert sim.calls[CREATE_LIST] == 1


def test_a_lost_create_beyond_the_listing_cap_is_left_for_the_operator(
    sim: Simulator, client: QualtricsClient, store: Store, sqlite_url: str, clock
) -> None:
    settings = make_settings(sim, sqlite_url, list_headroom=0)
    name = "linkpool/nps/0123456789abcdef0123456789abcdef"
    list_id = creating_row(store, clock, name)
    seed_directory(sim, MAILING_LIST_LISTING_CAP)  # the listing shows no more than these

    report = refill(settings, client, store, clock)

    assert report.exit_code == 1
    assert sim.calls[CREATE_LIST] == 0  # never created twice, nor anything new
    row = next(row for row in list_rows(store) if row["id"] == list_id)
    assert row["state"] == ListState.FAILED
    assert name in row["last_error"] and "10,000" in row["last_error"]
    (error,) = report.pools[0].errors  # and the pool plans nothing more while it has one
    assert name in error and "will not create it twice" in error


def test_no_new_list_within_the_headroom_of_the_cap(
    sim: Simulator, client: QualtricsClient, store: Store, sqlite_url: str, clock
) -> None:
    seed_directory(sim, MAILING_LIST_LISTING_CAP - 100)
    report = refill(make_settings(sim, sqlite_url, list_headroom=100), client, store, clock)
    assert report.exit_code == 1
    assert sim.calls[CREATE_LIST] == 0
    assert "10,000" in report.pools[0].errors[0]

    with sim.client() as fresh:  # a later run counts the directory again
        later = refill(make_settings(sim, sqlite_url, list_headroom=99), fresh, store, clock)
    assert later.exit_code == 0
    assert sim.calls[CREATE_LIST] == 1


# --- 10. rate-limit budgets ------------------------------------------------------------------


def test_the_links_listing_has_its_own_budget(sim: Simulator, clock: ManualClock) -> None:
    with sim.client(links_requests_per_minute=2, requests_per_minute=1000) as client:
        mailing_list_id = client.create_mailing_list("x")
        job = client.start_import(mailing_list_id, [{"extRef": "a"}])
        client.wait_for_import(mailing_list_id, job.id, poll_interval=0.0)
        distribution_id = client.create_link_distribution(
            survey_id=SURVEY,
            mailing_list_id=mailing_list_id,
            description="x",
            expires_at=clock.now() + timedelta(days=1),
        )
        started = clock.monotonic()
        for _ in range(2):
            list(client.iter_links(distribution_id, SURVEY))
        assert clock.monotonic() == started  # within the budget: no wait
        list(client.iter_links(distribution_id, SURVEY))
    assert clock.monotonic() - started == pytest.approx(30.0)  # the third waits for its token
