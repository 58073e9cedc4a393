"""forget (issue 10.6): a recipient erased from every claim, on SQLite and PostgreSQL; their
placeholder contacts cleared in the simulator now, or by sync once Qualtrics answers again."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from linkpool.cli import App, main
from linkpool.config import GcSettings, PoolSettings, Settings, SyncSettings
from linkpool.export import write_claims
from linkpool.gc import collect
from linkpool.lease import Lease
from linkpool.models import Erasure, LinkStatus, WriteBack, links
from linkpool.pool import LinkPool
from linkpool.simulator import Simulator
from linkpool.store import Store
from linkpool.sync import LEASE_NAME, backoff, sync
from tests.provision import SURVEY_ID, provision_list

PUT_CONTACT = "PUT /directories/{directoryId}/mailinglists/{mailingListId}/contacts/{contactId}"


@pytest.fixture(params=["sqlite", "postgres"])
def database(request):
    """(url, engine) on a fresh SQLite file or the session's emptied PostgreSQL database."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url"), request.getfixturevalue("engine")
    return request.getfixturevalue("postgres_url"), request.getfixturevalue("pg_engine")


@pytest.fixture
def store(database):
    return Store(database[1])


@pytest.fixture
def sim(clock):
    return Simulator(clock=clock)


@pytest.fixture
def client(sim):
    with sim.client(max_retries=0) as client:
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
def settings(database):
    return make_settings(database[0])


@pytest.fixture
def linkpool(settings, database, clock, client):
    return LinkPool.from_settings(settings, clock=clock, engine=database[1], client=client)


@pytest.fixture
def provisioned(client, store, clock):
    return provision_list(client, store, clock, size=5, ttl=timedelta(days=10))


def row_of(store: Store, link_id: int):
    with store.read() as connection:
        return connection.execute(sa.select(links).where(links.c.id == link_id)).mappings().one()


def test_forget_erases_every_claim_and_clears_the_written_contact(
    sim, client, store, clock, settings, linkpool, provisioned
):
    ann = linkpool.claim("nps", recipient="ann", key="k-1", data={"store": 12, "order": "A-1"})
    ann_again = linkpool.claim("nps", recipient="ann", data={"order": "A-2"})
    bob = linkpool.claim("nps", recipient="bob", data={"order": "B-1"})
    sync(settings, client, store, clock)
    claimed_before = linkpool.counts("nps")
    clock.advance(timedelta(hours=1))

    with client.tally() as calls:
        report = linkpool.forget("ann")

    assert (report.claims_erased, report.pools) == (2, ["nps"])
    assert (report.contacts_cleared, report.contacts_pending) == (2, 0)
    assert calls == {PUT_CONTACT: 2}
    assert sim.contact(ann.contact_id)["embeddedData"] == {
        "channel": "store",
        "store": "default",  # the pool's own value, not the claim's
        "order": "",
        "linkpool_recipient": "",
    }
    assert sim.contact(ann_again.contact_id)["embeddedData"]["linkpool_recipient"] == ""
    assert sim.contact(bob.contact_id)["embeddedData"]["linkpool_recipient"] == "bob"
    for claim in (ann, ann_again):
        row = row_of(store, claim.link_id)
        assert (row["status"], row["recipient"], row["idempotency_key"], row["data"]) == (
            LinkStatus.CLAIMED,
            None,
            None,
            None,
        )
        assert row["erased_at"] == clock.now()
        assert (row["writeback"], row["erasure"]) == (WriteBack.DONE, Erasure.DONE)
    assert row_of(store, bob.link_id)["recipient"] == "bob"
    after = linkpool.counts("nps")
    assert (after.claimed, after.claimable) == (claimed_before.claimed, claimed_before.claimable)


def test_a_response_taken_after_forget_carries_no_recipient(
    sim, client, store, clock, settings, linkpool, provisioned
):
    claim = linkpool.claim("nps", recipient="ann", data={"order": "A-1"})
    sync(settings, client, store, clock)
    linkpool.forget("ann")

    assert sim.respond(claim.url).ok
    (response,) = sim.responses()
    assert response.embedded_data["linkpool_recipient"] == ""
    assert response.embedded_data["order"] == ""


def test_a_pending_write_back_is_cancelled_and_never_sent(
    sim, client, store, clock, settings, linkpool, provisioned
):
    claim = linkpool.claim("nps", recipient="ann", data={"order": "A-1"})

    with client.tally() as calls:
        report = linkpool.forget("ann")
        later = sync(settings, client, store, clock)

    assert (report.claims_erased, report.nothing_to_clear, report.contacts_cleared) == (1, 1, 0)
    assert PUT_CONTACT not in calls  # nothing reached Qualtrics, so nothing needed clearing
    assert later.written == 0
    assert "linkpool_recipient" not in sim.contact(claim.contact_id)["embeddedData"]
    row = row_of(store, claim.link_id)
    assert (row["writeback"], row["erasure"]) == (WriteBack.CANCELLED, None)


def test_qualtrics_down_leaves_the_clearing_to_sync(
    sim, client, store, clock, settings, linkpool, provisioned
):
    claim = linkpool.claim("nps", recipient="ann", data={"order": "A-1"})
    sync(settings, client, store, clock)
    sim.faults.error_rate = 1.0

    report = linkpool.forget("ann")

    assert (report.claims_erased, report.contacts_cleared, report.contacts_pending) == (1, 0, 1)
    assert any("sync" in note for note in report.notes)
    row = row_of(store, claim.link_id)
    assert row["recipient"] is None and row["erasure"] == Erasure.PENDING
    assert sim.contact(claim.contact_id)["embeddedData"]["linkpool_recipient"] == "ann"

    sim.faults.error_rate = 0.0
    assert sync(settings, client, store, clock).contacts_cleared == 0  # not due yet
    clock.advance(backoff(1))
    assert sync(settings, client, store, clock).contacts_cleared == 1
    assert sim.contact(claim.contact_id)["embeddedData"]["linkpool_recipient"] == ""
    assert row_of(store, claim.link_id)["erasure"] == Erasure.DONE


def test_while_sync_runs_every_contact_is_cleared_by_sync(
    sim, client, store, clock, settings, linkpool, provisioned
):
    claim = linkpool.claim("nps", recipient="ann", data={"order": "A-1"})
    running = Lease(store, LEASE_NAME, clock)
    assert running.acquire()

    report = linkpool.forget("ann")

    # A write-back may be in flight in that sync: the contact is cleared after it, to be sure.
    assert (report.contacts_pending, report.nothing_to_clear) == (1, 0)
    assert any("sync is running" in note for note in report.notes)
    running.release()
    later = sync(settings, client, store, clock)
    assert (later.written, later.contacts_cleared) == (0, 1)
    assert sim.contact(claim.contact_id)["embeddedData"]["linkpool_recipient"] == ""


def test_a_replay_of_an_erased_key_is_a_new_claim(linkpool, provisioned):
    first = linkpool.claim("nps", recipient="ann", key="k-1")
    linkpool.forget("ann")

    again = linkpool.claim("nps", recipient="ann", key="k-1")

    assert not again.replayed and again.link_id != first.link_id
    assert linkpool.claim_by_key("nps", "k-1").link_id == again.link_id


def test_a_recipient_with_no_claims_is_reported_and_nothing_changes(
    client, store, linkpool, provisioned
):
    linkpool.claim("nps", recipient="bob")

    report = linkpool.forget("ann")

    assert report.claims_erased == 0 and report.summary().startswith("no claims")
    assert linkpool.counts("nps").claimed == 1


def test_a_list_gc_deleted_is_reported_unreachable(sim, client, store, clock, settings, linkpool):
    provision_list(client, store, clock, size=2, ttl=timedelta(days=3))
    claim = linkpool.claim("nps", recipient="ann", data={"order": "A-1"})
    sync(settings, client, store, clock)
    clock.advance(timedelta(days=4))
    collect(settings, client, store, clock)

    report = linkpool.forget("ann")

    assert (report.contacts_unreachable, report.contacts_pending) == (1, 0)
    assert row_of(store, claim.link_id)["erasure"] == Erasure.UNREACHABLE


def test_mapped_contact_fields_are_emptied(sim, client, store, clock, database, provisioned):
    settings = make_settings(database[0], contact_fields={"firstName": "first", "email": "mail"})
    linkpool = LinkPool.from_settings(settings, clock=clock, engine=database[1], client=client)
    claim = linkpool.claim("nps", recipient="ann", data={"first": "Ann", "mail": "a@example.com"})
    sync(settings, client, store, clock)
    assert sim.contact(claim.contact_id)["email"] == "a@example.com"

    linkpool.forget("ann")

    contact = sim.contact(claim.contact_id)
    assert (contact["firstName"], contact["email"]) == ("", "")


def test_export_shows_erased_claims(client, store, clock, settings, linkpool, provisioned):
    linkpool.claim("nps", recipient="ann", key="k-1", data={"order": "A-1"})
    linkpool.claim("nps", recipient="bob")
    linkpool.forget("ann")

    stream = io.StringIO()
    write_claims(store, "nps", stream, "csv")

    rows = list(csv.DictReader(io.StringIO(stream.getvalue())))
    assert [(r["recipient"], r["key"], r["data"], bool(r["erased_at"])) for r in rows] == [
        ("", "", "", True),
        ("bob", "", "", False),
    ]
    assert "ann" not in stream.getvalue() and "A-1" not in stream.getvalue()


def cli_runner(tmp_path, database, sim, clock):
    config = tmp_path / "linkpool.toml"
    config.write_text(
        f'[database]\nurl = "{database[1].url.render_as_string(hide_password=False)}"\n\n'
        f'[qualtrics]\nbase_url = "{sim.base_url}"\ndirectory_id = "{sim.directory_id}"\n\n'
        f'[pools.nps]\nsurvey_id = "{SURVEY_ID}"\n'
    )

    def run(*args: str):
        app = App(str(config), clock=clock, transport=sim.transport())
        env = {"QUALTRICS_API_TOKEN": sim.token}
        return CliRunner().invoke(main, ["--config", str(config), *args], obj=app, env=env)

    return run


def test_cli_forget(tmp_path, database, sim, client, store, clock, settings, linkpool, provisioned):
    run = cli_runner(tmp_path, database, sim, clock)
    claim = linkpool.claim("nps", recipient="ann", data={"order": "A-1"})
    sync(settings, client, store, clock)

    result = run("forget", "--recipient", "ann", "--json")

    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["claims_erased"], report["contacts_cleared"]) == (1, 1)
    assert "ann" not in result.output
    assert sim.contact(claim.contact_id)["embeddedData"]["linkpool_recipient"] == ""

    again = run("forget", "--recipient", "ann")
    assert again.exit_code == 0
    assert again.stdout.strip() == "no claims for this recipient: nothing to erase"

    exported = run("export", "nps", "--format", "json")
    (row,) = json.loads(exported.stdout)
    assert row["recipient"] is None and row["erased_at"] is not None


def test_cli_forget_with_qualtrics_down_says_sync_clears_it(
    tmp_path, database, sim, client, store, clock, settings, linkpool, provisioned
):
    run = cli_runner(tmp_path, database, sim, clock)
    linkpool.claim("nps", recipient="ann", data={"order": "A-1"})
    sync(settings, client, store, clock)
    sim.faults.error_rate = 1.0

    result = run("forget", "--recipient", "ann")

    assert result.exit_code == 0, result.output
    assert "erased 1 claim(s) in nps" in result.stdout and "pending 1" in result.stdout
    assert "linkpool sync" in result.stderr and "Traceback" not in result.output


@pytest.mark.parametrize("recipient", ["", "   ", "x" * 256])
def test_cli_forget_refuses_a_bad_recipient_in_one_line(
    tmp_path, database, sim, clock, recipient, provisioned
):
    result = cli_runner(tmp_path, database, sim, clock)("forget", "--recipient", recipient)

    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "recipient" in result.stderr


def test_without_qualtrics_settings_the_clearing_waits_for_sync(
    sim, client, store, clock, settings, database, provisioned
):
    offline = LinkPool.from_settings(settings, clock=clock, engine=database[1])
    claim = offline.claim("nps", recipient="ann", data={"order": "A-1"})
    sync(settings, client, store, clock)

    report = offline.forget("ann")

    assert (report.claims_erased, report.contacts_pending) == (1, 1)
    assert report.notes == ["no [qualtrics] settings here: `linkpool sync` clears them"]
    assert sync(settings, client, store, clock).contacts_cleared == 1
    assert sim.contact(claim.contact_id)["embeddedData"]["linkpool_recipient"] == ""
