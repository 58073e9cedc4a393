"""sync against the simulator: the data written, retries with backoff, the attempt budget."""

from __future__ import annotations

import json
import threading
from datetime import timedelta

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from linkpool.cli import App, main
from linkpool.config import GcSettings, PoolSettings, Settings, SyncSettings
from linkpool.errors import AuthError, ConfigError, LeaseHeld, LeaseInDoubt, LeaseLost
from linkpool.gc import collect
from linkpool.lease import Lease
from linkpool.models import WriteBack, leases, links
from linkpool.pool import LinkPool
from linkpool.simulator import Simulator
from linkpool.sync import as_text, backoff, sync
from tests.provision import SURVEY_ID, provision_list

PUT_CONTACT = "PUT /directories/{directoryId}/mailinglists/{mailingListId}/contacts/{contactId}"


@pytest.fixture
def sim(clock):
    return Simulator(clock=clock)


@pytest.fixture
def client(sim):
    with sim.client() as client:
        yield client


def make_settings(database_url: str, **sync_options) -> Settings:
    pool = PoolSettings(
        name="nps",
        survey_id=SURVEY_ID,
        link_ttl=timedelta(days=30),
        min_remaining=timedelta(days=1),
        embedded_data={"channel": "store", "store": "default"},
    )
    return Settings(
        database_url=database_url,
        pools={"nps": pool},
        gc=GcSettings(grace=timedelta(hours=1)),
        sync=SyncSettings(**sync_options),
    )


@pytest.fixture
def settings(sqlite_url):
    return make_settings(sqlite_url)


@pytest.fixture
def linkpool(settings, engine, clock):
    return LinkPool.from_settings(settings, clock=clock, engine=engine)


@pytest.fixture
def provisioned(client, store, clock):
    return provision_list(client, store, clock, size=5, ttl=timedelta(days=10))


def writeback_of(store, link_id: int):
    with store.read() as connection:
        query = sa.select(links).where(links.c.id == link_id)
        return connection.execute(query).mappings().one()


def test_sync_writes_pool_data_claim_data_and_recipient(
    sim, client, store, clock, settings, linkpool, provisioned
):
    claim = linkpool.claim(
        "nps", recipient="cust-42", data={"store": 12, "vip": True, "name": "Ann", "note": None}
    )

    report = sync(settings, client, store, clock)

    assert report.written == 1 and report.failed == report.retrying == 0
    assert report.api_calls == {PUT_CONTACT: 1}
    assert sim.contact(claim.contact_id)["embeddedData"] == {
        "channel": "store",
        "store": "12",
        "vip": "true",
        "name": "Ann",
        "linkpool_recipient": "cust-42",
    }
    assert "firstName" not in sim.contact(claim.contact_id)
    row = writeback_of(store, claim.link_id)
    assert (row["writeback"], row["writeback_attempts"]) == (WriteBack.DONE, 1)


def test_the_written_data_reaches_the_response(
    sim, client, store, clock, settings, linkpool, provisioned
):
    claim = linkpool.claim("nps", recipient="cust-42", data={"order": "A-1"})
    sync(settings, client, store, clock)

    assert sim.respond(claim.url).ok
    (response,) = sim.responses()
    assert response.embedded_data["linkpool_recipient"] == "cust-42"
    assert response.embedded_data["order"] == "A-1"


def test_contact_fields_are_mapped_only_when_configured(
    sim, client, store, clock, sqlite_url, linkpool, provisioned
):
    settings = make_settings(
        sqlite_url, recipient_field="customer", contact_fields={"firstName": "first"}
    )
    claim = linkpool.claim("nps", recipient="cust-7", data={"first": "Ann"})

    sync(settings, client, store, clock)

    contact = sim.contact(claim.contact_id)
    assert contact["firstName"] == "Ann"
    assert contact["embeddedData"]["customer"] == "cust-7"


def test_a_server_error_is_retried_after_a_backoff(
    sim, store, clock, settings, linkpool, provisioned
):
    claim = linkpool.claim("nps", recipient="ann")
    sim.faults.error_rate = 1.0
    with sim.client(max_retries=0) as client:
        first = sync(settings, client, store, clock)
    assert first.retrying == 1 and first.written == 0
    row = writeback_of(store, claim.link_id)
    assert row["writeback"] == WriteBack.PENDING and row["writeback_attempts"] == 1
    assert row["writeback_due_at"] == clock.now() + backoff(1)
    assert "500" in row["writeback_error"] or "503" in row["writeback_error"]

    sim.faults.error_rate = 0.0
    with sim.client(max_retries=0) as client:
        assert sync(settings, client, store, clock).written == 0  # not due yet
        clock.advance(backoff(1))
        assert sync(settings, client, store, clock).written == 1
    assert writeback_of(store, claim.link_id)["writeback_error"] is None


def test_rate_limited_write_backs_are_retried(sim, store, clock, settings, linkpool, provisioned):
    claims = [linkpool.claim("nps", recipient=f"r{n}") for n in range(3)]
    with sim.client(max_retries=0, max_concurrency=1) as client:
        client.verify_host()  # sync's first check, before the budget is cut to one a minute
        sim.faults.rate_limit_per_minute = 1
        first = sync(settings, client, store, clock)
        assert (first.written, first.retrying) == (1, 2)
        clock.advance(timedelta(minutes=5))
        second = sync(settings, client, store, clock)
    assert second.written >= 1
    with sim.client() as patient:  # the client itself waits out Retry-After
        clock.advance(timedelta(minutes=5))
        sync(settings, patient, store, clock)
    assert {writeback_of(store, c.link_id)["writeback"] for c in claims} == {WriteBack.DONE}


def test_sync_gives_up_after_its_budget_and_reports_it(
    sim, store, clock, sqlite_url, linkpool, provisioned
):
    settings = make_settings(sqlite_url, max_attempts=3)
    claim = linkpool.claim("nps", recipient="ann")
    sim.faults.error_rate = 1.0
    reports = []
    with sim.client(max_retries=0) as client:
        for _ in range(4):
            reports.append(sync(settings, client, store, clock))
            clock.advance(timedelta(hours=1))

    assert [r.retrying for r in reports] == [1, 1, 0, 0]
    assert [r.failed for r in reports] == [0, 0, 1, 0]
    assert "gave up after 3 attempt(s)" in reports[2].errors[0]
    row = writeback_of(store, claim.link_id)
    assert row["writeback"] == WriteBack.FAILED and "gave up" in row["writeback_error"]
    assert linkpool.counts("nps").writeback_failed == 1

    sim.faults.error_rate = 0.0
    with sim.client() as client:
        assert sync(settings, client, store, clock).written == 0
        retried = sync(settings, client, store, clock, retry_failed=True)
    assert (retried.requeued, retried.written) == (1, 1)
    assert writeback_of(store, claim.link_id)["writeback"] == WriteBack.DONE


def test_claims_of_deleted_lists_fail_with_a_clear_error(
    sim, client, store, clock, settings, linkpool
):
    provision_list(client, store, clock, size=2, ttl=timedelta(days=3))
    claim = linkpool.claim("nps", recipient="ann")
    clock.advance(timedelta(days=4))
    collect(settings, client, store, clock)

    report = sync(settings, client, store, clock)

    assert report.failed == 1 and report.api_calls == {}
    row = writeback_of(store, claim.link_id)
    assert row["writeback"] == WriteBack.FAILED
    assert "deleted by gc" in row["writeback_error"]
    assert [c.link_id for c in store.iter_claims("nps")] == [claim.link_id]


def test_sync_works_through_many_batches(sim, client, store, clock, settings, linkpool):
    provision_list(client, store, clock, size=12, ttl=timedelta(days=10))
    claims = [linkpool.claim("nps", recipient=f"r{n}") for n in range(12)]

    report = sync(settings, client, store, clock, batch_size=5)

    assert report.written == 12
    assert all(
        sim.contact(c.contact_id)["embeddedData"]["linkpool_recipient"] == c.recipient
        for c in claims
    )


def test_a_stop_request_ends_sync_between_write_backs_leaving_the_rest_pending(
    client, store, clock, settings, linkpool, provisioned, monkeypatch
):
    claims = [linkpool.claim("nps", recipient=f"r{n}") for n in range(5)]
    stop = threading.Event()
    update_contact = client.update_contact

    def update_then_stop_after_two(*args):
        update_contact(*args)
        if client.calls[PUT_CONTACT] == 2:
            stop.set()

    monkeypatch.setattr(client, "update_contact", update_then_stop_after_two)

    report = sync(settings, client, store, clock, stop=stop)

    assert (report.written, report.failed, report.retrying) == (2, 0, 0)
    rows = [writeback_of(store, claim.link_id) for claim in claims]
    assert [(row["writeback"], row["writeback_attempts"]) for row in rows] == [
        (WriteBack.DONE, 1),
        (WriteBack.DONE, 1),
        (WriteBack.PENDING, 0),
        (WriteBack.PENDING, 0),
        (WriteBack.PENDING, 0),
    ]
    assert Lease(store, "sync", clock).current_holder() is None
    assert sync(settings, client, store, clock).written == 3


def test_a_refused_token_stops_sync_without_spending_attempts(
    sim, store, clock, settings, linkpool, provisioned
):
    claim = linkpool.claim("nps", recipient="ann")
    with sim.client(token="wrong-token") as client, pytest.raises(AuthError):
        sync(settings, client, store, clock)
    row = writeback_of(store, claim.link_id)
    assert (row["writeback"], row["writeback_attempts"]) == (WriteBack.PENDING, 0)


def test_two_syncs_do_not_run_at_once(client, store, clock, settings):
    with Lease(store, "sync", clock), pytest.raises(LeaseHeld):
        sync(settings, client, store, clock)


@pytest.mark.parametrize(
    ("value", "text"),
    [("x", "x"), (12, "12"), (1.5, "1.5"), (True, "true"), ({"b": 1, "a": [2]}, '{"a":[2],"b":1}')],
)
def test_embedded_data_values_are_text(value, text):
    assert as_text(value) == text


def test_backoff_doubles_up_to_an_hour():
    assert [backoff(n) for n in (1, 2, 3)] == [timedelta(seconds=s) for s in (30, 60, 120)]
    assert backoff(20) == timedelta(hours=1)


def test_claim_with_sync_writes_back_before_returning(
    sim, client, store, clock, settings, engine, provisioned
):
    linkpool = LinkPool.from_settings(settings, clock=clock, engine=engine, client=client)

    claim = linkpool.claim("nps", recipient="ann", data={"order": 7}, sync=True)

    embedded = sim.contact(claim.contact_id)["embeddedData"]
    assert (embedded["linkpool_recipient"], embedded["order"]) == ("ann", "7")
    assert writeback_of(store, claim.link_id)["writeback"] == WriteBack.DONE
    assert sync(settings, client, store, clock).api_calls == {}


def test_claim_with_sync_returns_the_claim_when_qualtrics_is_down(
    sim, client, store, clock, settings, engine, provisioned
):
    sim.faults.error_rate = 1.0
    with sim.client(max_retries=0) as failing:
        linkpool = LinkPool.from_settings(settings, clock=clock, engine=engine, client=failing)
        claim = linkpool.claim("nps", recipient="ann", sync=True)

    assert claim.recipient == "ann"
    assert writeback_of(store, claim.link_id)["writeback"] == WriteBack.PENDING
    sim.faults.error_rate = 0.0
    clock.advance(backoff(1))
    assert sync(settings, client, store, clock).written == 1


def test_claim_with_sync_needs_qualtrics_and_then_claims_nothing(
    store, clock, settings, engine, provisioned
):
    linkpool = LinkPool.from_settings(settings, clock=clock, engine=engine)

    with pytest.raises(ConfigError, match="qualtrics"):
        linkpool.claim("nps", recipient="ann", sync=True)
    assert linkpool.counts("nps").claimed == 0


def test_cli_sync_json_and_exit_code(
    tmp_path, sim, client, store, clock, linkpool, provisioned, monkeypatch
):
    config = tmp_path / "linkpool.toml"
    config.write_text(
        f'[database]\nurl = "{store.engine.url.render_as_string()}"\n\n'
        f'[sync]\nmax_attempts = 1\n\n[pools.nps]\nsurvey_id = "{SURVEY_ID}"\n'
    )
    monkeypatch.setattr(
        "linkpool.cli.app.App.qualtrics_client", lambda app: sim.client(max_retries=0)
    )
    linkpool.claim("nps", recipient="ann")
    linkpool.claim("nps", recipient="bob")

    def run(*args: str):
        return CliRunner().invoke(main, [*args], obj=App(str(config), clock=clock))

    sim.faults.error_rate = 1.0
    failed = run("sync", "--json")
    assert failed.exit_code == 1
    assert json.loads(failed.stdout)["failed"] == 2

    sim.faults.error_rate = 0.0
    retried = run("sync", "--retry-failed", "--json")
    assert retried.exit_code == 0, retried.output
    assert {k: json.loads(retried.stdout)[k] for k in ("requeued", "written")} == {
        "requeued": 2,
        "written": 2,
    }


def test_a_sync_whose_lease_is_taken_over_records_and_sends_nothing_more(
    sim, client, store, clock, settings, linkpool, provisioned, monkeypatch
):
    """The first write-back is sent, then a rival takes the lease over: the outcome is not
    recorded (the rival sends it again, harmless) and no further PUT goes out."""
    first, second = (linkpool.claim("nps", recipient=f"r-{n}") for n in range(2))
    real_update = client.update_contact

    def update_then_lose_the_lease(*args, **kwargs):
        real_update(*args, **kwargs)
        with store.write() as connection:
            connection.execute(sa.update(leases).values(holder="rival:1:ffff"))

    monkeypatch.setattr(client, "update_contact", update_then_lose_the_lease)

    with pytest.raises(LeaseLost, match="taken over by rival"):
        sync(settings, client, store, clock, batch_size=1)

    assert sim.calls[PUT_CONTACT] == 1
    assert {writeback_of(store, c.link_id)["writeback"] for c in (first, second)} == {
        WriteBack.PENDING
    }


def test_sync_names_a_live_holder_and_refuses_a_lease_in_doubt(store, client, clock, settings):
    with Lease(store, "sync", clock, holder="web-2:99:abcd"):
        with pytest.raises(LeaseHeld, match="held by host web-2, pid 99, since "):
            sync(settings, client, store, clock)
    store.acquire_lease("sync", "old:1:cafe", now=clock.now(), ttl=timedelta(minutes=5))

    with pytest.raises(LeaseInDoubt, match="older linkpool") as caught:
        sync(settings, client, store, clock)

    assert caught.value.exit_code == 1
