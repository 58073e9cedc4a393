"""gc against the simulator: what it deletes, what it voids, and what it must never touch."""

from __future__ import annotations

import json
import threading
from collections import Counter
from datetime import timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from linkpool.cli import App, main
from linkpool.config import GcSettings, PoolSettings, QualtricsSettings, Settings
from linkpool.db import create_engine, upgrade
from linkpool.errors import LeaseHeld, LeaseLost
from linkpool.gc import collect, delete_orphans, find_orphans
from linkpool.lease import DEFAULT_TTL, Lease
from linkpool.models import LinkStatus, ListState, leases, links
from linkpool.pool import LinkPool
from linkpool.refill import new_list_name, refill, refill_lease_name
from linkpool.simulator import Simulator
from linkpool.store import ResponseChange, Store
from tests.provision import SURVEY_ID, provision_list

DELETE_DISTRIBUTION = "DELETE /distributions/{distributionId}"
DELETE_LIST = "DELETE /directories/{directoryId}/mailinglists/{mailingListId}"
GRACE = timedelta(hours=1)


@pytest.fixture
def sim(clock):
    return Simulator(clock=clock)


@pytest.fixture
def client(sim):
    with sim.client() as client:
        yield client


@pytest.fixture
def settings(sqlite_url):
    pool = PoolSettings(
        name="nps",
        survey_id=SURVEY_ID,
        link_ttl=timedelta(days=30),
        min_remaining=timedelta(days=1),
    )
    return Settings(database_url=sqlite_url, pools={"nps": pool}, gc=GcSettings(grace=GRACE))


@pytest.fixture
def linkpool(settings, engine, clock):
    return LinkPool.from_settings(settings, clock=clock, engine=engine)


def link_rows(store, list_id: int) -> list[Any]:
    with store.read() as connection:
        query = sa.select(links).where(links.c.list_id == list_id).order_by(links.c.id)
        return list(connection.execute(query).mappings())


def test_gc_deletes_exactly_the_expired_lists(sim, client, store, clock, settings, linkpool):
    expiring = provision_list(client, store, clock, ttl=timedelta(days=3))
    lasting = provision_list(client, store, clock, ttl=timedelta(days=20))
    claim = linkpool.claim("nps", recipient="ann")
    assert claim.link_id in {row["id"] for row in link_rows(store, expiring)}
    clock.advance(timedelta(days=3) + GRACE + timedelta(minutes=1))

    report = collect(settings, client, store, clock)

    gone, kept = store.get_list(expiring), store.get_list(lasting)
    assert (gone.state, kept.state) == (ListState.DELETED, ListState.READY)
    assert gone.deleted_at == clock.now()
    assert gone.mailing_list_id not in sim.mailing_lists()
    assert gone.distribution_id not in sim.distributions()
    assert kept.mailing_list_id in sim.mailing_lists()
    assert kept.distribution_id in sim.distributions()
    statuses = sorted(row["status"] for row in link_rows(store, expiring))
    assert statuses == [LinkStatus.CLAIMED, LinkStatus.VOID, LinkStatus.VOID]
    assert report.lists_deleted == 1 and report.errors == []
    assert [action.list_id for action in report.lists] == [expiring]
    assert report.api_calls == {DELETE_DISTRIBUTION: 1, DELETE_LIST: 1}
    assert report.links_voided == 2


def test_a_stop_request_ends_gc_between_lists(client, store, clock, settings, monkeypatch):
    first = provision_list(client, store, clock, ttl=timedelta(days=3))
    second = provision_list(client, store, clock, ttl=timedelta(days=3))
    clock.advance(timedelta(days=3) + GRACE + timedelta(minutes=1))
    stop = threading.Event()
    delete_mailing_list = client.delete_mailing_list

    def delete_then_stop(mailing_list_id: str) -> None:
        delete_mailing_list(mailing_list_id)
        stop.set()

    monkeypatch.setattr(client, "delete_mailing_list", delete_then_stop)

    report = collect(settings, client, store, clock, stop=stop)

    assert report.lists_deleted == 1
    states = {store.get_list(first).state, store.get_list(second).state}
    assert states == {ListState.DELETED, ListState.READY}
    assert collect(settings, client, store, clock).lists_deleted == 1


def test_gc_waits_out_the_grace(client, store, clock, settings):
    list_id = provision_list(client, store, clock, ttl=timedelta(days=3))
    clock.advance(timedelta(days=3) + GRACE - timedelta(minutes=1))

    report = collect(settings, client, store, clock)

    assert report.lists_deleted == 0
    assert store.get_list(list_id).state == ListState.READY


def test_export_still_lists_claims_of_deleted_lists(client, store, clock, settings, linkpool):
    list_id = provision_list(client, store, clock, ttl=timedelta(days=3))
    claim = linkpool.claim("nps", recipient="ann", data={"order": 7})
    clock.advance(timedelta(days=4))

    collect(settings, client, store, clock)

    assert store.get_list(list_id).state == ListState.DELETED
    claims = list(store.iter_claims("nps"))
    assert [(row.link_id, row.recipient) for row in claims] == [(claim.link_id, "ann")]
    assert claims[0].mailing_list_id == store.get_list(list_id).mailing_list_id


def test_gc_never_deletes_a_list_holding_an_unexpired_claim(
    sim, client, store, clock, settings, linkpool
):
    list_id = provision_list(client, store, clock, ttl=timedelta(days=3))
    claim = linkpool.claim("nps", recipient="ann")
    # The claimed link outlives its list's recorded expiry (as after a clock skew or an edit).
    with store.write() as connection:
        connection.execute(
            sa.update(links)
            .where(links.c.id == claim.link_id)
            .values(expires_at=clock.now() + timedelta(days=10))
        )
    clock.advance(timedelta(days=4))

    report = collect(settings, client, store, clock)

    assert store.get_list(list_id).state == ListState.READY
    assert report.lists_deleted == 0
    assert store.get_list(list_id).mailing_list_id in sim.mailing_lists()


def test_gc_refuses_when_a_claim_appears_before_the_delete(
    sim, client, store, clock, settings, linkpool, monkeypatch
):
    """The defensive check before each delete holds even if the candidate query was wrong."""
    list_id = provision_list(client, store, clock, ttl=timedelta(days=3), failed=True)
    claim = linkpool.claim("nps", recipient="ann")
    with store.write() as connection:
        connection.execute(
            sa.update(links).where(links.c.id == claim.link_id).values(status=LinkStatus.AVAILABLE)
        )
    real_begin = store.begin_reaping

    def begin_then_claim(list_id: int, **kwargs: Any) -> int | None:
        voided = real_begin(list_id, **kwargs)
        with store.write() as connection:  # a claim slipping in after the atomic check
            connection.execute(
                sa.update(links)
                .where(links.c.id == claim.link_id)
                .values(status=LinkStatus.CLAIMED)
            )
        return voided

    monkeypatch.setattr(store, "begin_reaping", begin_then_claim)

    report = collect(settings, client, store, clock)

    assert report.lists_deleted == 0
    assert "refused to delete" in report.errors[0]
    row = store.get_list(list_id)
    assert row.mailing_list_id in sim.mailing_lists()
    assert row.distribution_id in sim.distributions()
    assert sim.open_link(claim.url).ok


def test_gc_voids_links_that_can_no_longer_be_claimed(sim, client, store, clock, settings):
    list_id = provision_list(client, store, clock, ttl=timedelta(days=3))
    clock.advance(timedelta(days=2, hours=1))  # less than min_remaining (1 day) left

    report = collect(settings, client, store, clock)

    assert report.links_voided == 3 and report.lists_deleted == 0
    assert {row["status"] for row in link_rows(store, list_id)} == {LinkStatus.VOID}
    assert store.get_list(list_id).mailing_list_id in sim.mailing_lists()


def test_gc_deletes_what_provisioning_left_behind(sim, client, store, clock, settings):
    failed = provision_list(client, store, clock, until=ListState.IMPORTED, failed=True)
    stuck = provision_list(client, store, clock, until=ListState.DISTRIBUTED)
    clock.advance(timedelta(hours=2))
    fresh = provision_list(client, store, clock, until=ListState.LIST_CREATED)

    report = collect(settings, client, store, clock)

    assert store.get_list(failed).state == ListState.DELETED
    assert store.get_list(stuck).state == ListState.DELETED
    assert store.get_list(fresh).state == ListState.LIST_CREATED
    assert {action.reason for action in report.lists} == {"failed", "stale"}
    assert set(sim.mailing_lists()) == {store.get_list(fresh).mailing_list_id}
    assert sim.distributions() == {}


def test_gc_leaves_a_pool_alone_while_its_refill_runs(client, store, clock, settings):
    stuck = provision_list(client, store, clock, until=ListState.LIST_CREATED)
    clock.advance(timedelta(hours=2))
    refill = Lease(store, refill_lease_name("nps"), clock)
    assert refill.acquire()

    collect(settings, client, store, clock)
    assert store.get_list(stuck).state == ListState.LIST_CREATED

    refill.release()
    collect(settings, client, store, clock)
    assert store.get_list(stuck).state == ListState.DELETED


def test_gc_finds_what_lost_answers_left_unrecorded(sim, client, store, clock, settings):
    """A list whose create answer was lost, and a distribution whose create answer was lost."""
    no_list_id = provision_list(client, store, clock, until=ListState.LIST_CREATED)
    store.update_list(no_list_id, now=clock.now(), state=ListState.PLANNED, mailing_list_id=None)
    no_distribution_id = provision_list(client, store, clock, until=ListState.DISTRIBUTED)
    store.update_list(
        no_distribution_id, now=clock.now(), state=ListState.IMPORTED, distribution_id=None
    )
    clock.advance(timedelta(hours=2))

    report = collect(settings, client, store, clock)

    assert report.lists_deleted == 2 and report.errors == []
    assert sim.mailing_lists() == {} and sim.distributions() == {}


def test_a_delete_answering_404_counts_as_done(sim, client, store, clock, settings):
    list_id = provision_list(client, store, clock, ttl=timedelta(days=3))
    row = store.get_list(list_id)
    client.delete_distribution(row.distribution_id)
    client.delete_mailing_list(row.mailing_list_id)
    clock.advance(timedelta(days=4))

    report = collect(settings, client, store, clock)

    assert report.errors == [] and report.lists_deleted == 1
    assert store.get_list(list_id).state == ListState.DELETED


def test_a_killed_gc_resumes_where_it_stopped(sim, client, store, clock, settings, monkeypatch):
    list_id = provision_list(client, store, clock, ttl=timedelta(days=3))
    clock.advance(timedelta(days=4))

    def killed(mailing_list_id: str) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(client, "delete_mailing_list", killed)
    with pytest.raises(KeyboardInterrupt):
        collect(settings, client, store, clock)
    assert store.get_list(list_id).state == ListState.DISTRIBUTION_DELETED
    monkeypatch.undo()
    clock.advance(timedelta(minutes=11))  # the killed run's lease lapses

    report = collect(settings, client, store, clock)

    assert [action.reason for action in report.lists] == ["resumed"]
    assert report.api_calls == {DELETE_LIST: 1}  # the distribution is not deleted twice
    assert store.get_list(list_id).state == ListState.DELETED
    assert store.get_list(list_id).mailing_list_id not in sim.mailing_lists()


class LosesFirstDeleteAnswer(httpx.BaseTransport):
    """Passes requests on, but loses the answer to the first DELETE after it took effect."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner = inner
        self.lost = False

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if request.method == "DELETE" and not self.lost:
            self.lost = True
            raise httpx.ReadTimeout("answer lost", request=request)
        return response


def test_a_lost_delete_answer_is_retried_and_the_404_accepted(sim, store, clock, settings):
    with sim.client() as setup:
        list_id = provision_list(setup, store, clock, ttl=timedelta(days=3))
    clock.advance(timedelta(days=4))
    transport = LosesFirstDeleteAnswer(sim.transport())

    with sim.client(transport=transport) as client:
        report = collect(settings, client, store, clock)

    assert transport.lost
    assert report.errors == [] and report.lists_deleted == 1
    assert report.api_calls[DELETE_DISTRIBUTION] == 2
    assert store.get_list(list_id).state == ListState.DELETED


def test_qualtrics_failures_are_reported_and_retried_next_run(sim, store, clock, settings):
    with sim.client() as setup:
        list_id = provision_list(setup, store, clock, ttl=timedelta(days=3))
    clock.advance(timedelta(days=4))
    sim.faults.error_rate = 1.0

    with sim.client(max_retries=0) as client:
        failing = collect(settings, client, store, clock)
    assert failing.lists_deleted == 0 and len(failing.errors) == 1
    assert store.get_list(list_id).state == ListState.REAPING
    assert store.get_list(list_id).last_error

    sim.faults.error_rate = 0.0
    with sim.client() as client:
        report = collect(settings, client, store, clock)
    assert report.lists_deleted == 1 and report.errors == []


def test_dry_run_touches_nothing(sim, client, store, clock, settings):
    expiring = provision_list(client, store, clock, ttl=timedelta(days=3))
    provision_list(client, store, clock, ttl=timedelta(days=4))
    clock.advance(timedelta(days=3, hours=2))
    lists_before, links_before = sim.mailing_lists(), link_rows(store, expiring)

    report = collect(settings, client, store, clock, dry_run=True)

    assert report.dry_run and [action.list_id for action in report.lists] == [expiring]
    assert report.links_voided == 6  # both lists' links: expired, or less than a day left
    assert report.lists_deleted == 0 and report.api_calls == {}
    assert sim.mailing_lists() == lists_before
    assert link_rows(store, expiring) == links_before
    assert store.get_list(expiring).state == ListState.READY


def test_purge_contacts_removes_the_placeholders(sim, client, store, clock, settings):
    list_id = provision_list(client, store, clock, ttl=timedelta(days=3))
    clock.advance(timedelta(days=4))
    purging = Settings(
        database_url=settings.database_url,
        pools=settings.pools,
        gc=GcSettings(grace=GRACE, purge_contacts=True),
    )

    report = collect(purging, client, store, clock)

    contact_ids = [row["contact_id"] for row in link_rows(store, list_id)]
    assert report.contacts_purged == 3
    assert all(sim.contact(contact_id)["deleted"] for contact_id in contact_ids)


def test_a_long_purge_keeps_renewing_the_gc_lease(
    sim, client, store, clock, settings, monkeypatch: pytest.MonkeyPatch
):
    provision_list(client, store, clock, ttl=timedelta(days=3))
    clock.advance(timedelta(days=4))
    purging = Settings(
        database_url=settings.database_url,
        pools=settings.pools,
        gc=GcSettings(grace=GRACE, purge_contacts=True),
    )
    real_delete = client.delete_directory_contact
    rival_took_it = []

    def slow_delete(contact_id: str) -> None:
        real_delete(contact_id)
        clock.advance(DEFAULT_TTL * 0.6)  # three deletions outlast one lease: the heartbeat
        rival_took_it.append(store.acquire_lease("gc", "rival", now=clock.now(), ttl=DEFAULT_TTL))

    monkeypatch.setattr(client, "delete_directory_contact", slow_delete)

    report = collect(purging, client, store, clock)

    assert report.contacts_purged == 3
    assert rival_took_it == [False, False, False]


def test_contacts_stay_by_default(sim, client, store, clock, settings):
    list_id = provision_list(client, store, clock, ttl=timedelta(days=3))
    clock.advance(timedelta(days=4))

    collect(settings, client, store, clock)

    assert not any(sim.contact(row["contact_id"])["deleted"] for row in link_rows(store, list_id))


def test_orphans_are_our_lists_the_database_does_not_know(sim, client, store, clock):
    known = provision_list(client, store, clock, until=ListState.LIST_CREATED)
    orphan_id = client.create_mailing_list("linkpool/nps/lost-in-a-restore")
    foreign_id = client.create_mailing_list("Newsletter subscribers")

    orphans = find_orphans(client, store, list_prefix="linkpool")

    assert [orphan.mailing_list_id for orphan in orphans] == [orphan_id]
    report = delete_orphans(client, store, clock, orphans)
    assert report.deleted == 1
    remaining = set(sim.mailing_lists())
    assert remaining == {store.get_list(known).mailing_list_id, foreign_id}


@pytest.fixture
def install(tmp_path, sim):
    """``install(list_prefix)``: one more installation on the simulator's directory, with a
    database of its own. Returns its settings and store."""
    engines: list[sa.engine.Engine] = []

    def make(list_prefix: str) -> tuple[Settings, Store]:
        url = f"sqlite:///{tmp_path / list_prefix}.db"
        engine = create_engine(url)
        upgrade(engine)
        engines.append(engine)
        qualtrics = QualtricsSettings(
            base_url=sim.base_url, directory_id=sim.directory_id, list_prefix=list_prefix
        )
        pool = PoolSettings(
            name="nps",
            survey_id=SURVEY_ID,
            target_available=6,
            low_water=6,
            list_size=3,
            link_ttl=timedelta(days=30),
            min_remaining=timedelta(days=1),
        )
        settings = Settings(database_url=url, qualtrics=qualtrics, pools={"nps": pool})
        return settings, Store(engine)

    yield make
    for engine in engines:
        engine.dispose()


def test_installations_sharing_a_directory_see_none_of_each_others_lists_as_orphans(
    sim, client, clock, install
):
    production, production_store = install("linkpool")  # the default prefix
    staging, staging_store = install("linkpool-staging")
    for settings, store in ((production, production_store), (staging, staging_store)):
        assert refill(settings, client, store, clock).exit_code == 0
    live = set(sim.mailing_lists())
    assert len(live) == 4
    lost = client.create_mailing_list(new_list_name("linkpool-staging", "nps"))

    assert find_orphans(client, production_store, list_prefix="linkpool") == []
    orphans = find_orphans(client, staging_store, list_prefix="linkpool-staging")
    assert [orphan.mailing_list_id for orphan in orphans] == [lost]

    report = delete_orphans(client, staging_store, clock, orphans)

    assert (report.deleted, report.errors) == (1, [])
    assert set(sim.mailing_lists()) == live
    for store in (production_store, staging_store):
        with store.read() as connection:
            urls = connection.execute(sa.select(links.c.url)).scalars().all()
        assert len(urls) == 6 and all(sim.open_link(url).ok for url in urls)


def test_gc_finds_a_list_whose_create_answer_was_lost_by_its_own_prefix(
    sim, client, clock, install
):
    settings, store = install("linkpool-staging")
    name = new_list_name("linkpool-staging", "nps")
    list_id = store.create_list(pool="nps", survey_id=SURVEY_ID, name=name, size=3, now=clock.now())
    mailing_list_id = client.create_mailing_list(name)  # its answer never reached the database
    clock.advance(timedelta(hours=2))

    report = collect(settings, client, store, clock)

    assert (report.lists_deleted, report.errors) == (1, [])
    assert mailing_list_id not in sim.mailing_lists()
    assert store.get_list(list_id).state == ListState.DELETED


def test_two_gcs_do_not_run_at_once(client, store, clock, settings):
    with Lease(store, "gc", clock), pytest.raises(LeaseHeld):
        collect(settings, client, store, clock)


@pytest.fixture
def cli(tmp_path, sqlite_url, sim, clock, monkeypatch):
    """Run ``linkpool`` in-process against the simulator and the test database."""
    config = tmp_path / "linkpool.toml"
    config.write_text(
        f'[database]\nurl = "{sqlite_url}"\n\n'
        f'[qualtrics]\nbase_url = "{sim.base_url}"\ndirectory_id = "{sim.directory_id}"\n\n'
        f'[pools.nps]\nsurvey_id = "{SURVEY_ID}"\nlink_ttl = "30d"\nmin_remaining = "1d"\n'
    )
    monkeypatch.setattr("linkpool.cli.app.App.qualtrics_client", lambda app: sim.client())

    def run(*args: str, input: str | None = None) -> Any:
        app = App(str(config), clock=clock)
        return CliRunner().invoke(main, ["--config", str(config), *args], obj=app, input=input)

    return run


def test_cli_gc_json_reports_what_it_did(cli, client, store, clock):
    list_id = provision_list(client, store, clock, ttl=timedelta(days=3))
    clock.advance(timedelta(days=3) + GcSettings().grace + timedelta(hours=1))

    dry = cli("gc", "--dry-run", "--json")
    assert dry.exit_code == 0, dry.output
    assert json.loads(dry.output)["lists"][0]["list_id"] == list_id
    assert store.get_list(list_id).state == ListState.READY

    result = cli("gc", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert (report["lists_deleted"], report["links_voided"], report["errors"]) == (1, 3, [])
    assert report["api_calls"] == {DELETE_DISTRIBUTION: 1, DELETE_LIST: 1}


def test_cli_gc_orphans_asks_before_deleting(cli, sim, client):
    orphan_id = client.create_mailing_list("linkpool/nps/orphan")

    listed = cli("gc", "--orphans")
    assert orphan_id in listed.output and orphan_id in sim.mailing_lists()

    refused = cli("gc", "--orphans", "--delete", input="n\n")
    assert refused.exit_code == 1 and orphan_id in sim.mailing_lists()

    deleted = cli("gc", "--orphans", "--delete", "--yes")
    assert deleted.exit_code == 0, deleted.output
    assert "deleted 1 orphan list(s)" in deleted.output
    assert orphan_id not in sim.mailing_lists()


def test_cli_gc_delete_needs_orphans(cli):
    result = cli("gc", "--delete")
    assert result.exit_code == 2 and "--orphans" in result.output


def claim_totals(store: Store, clock) -> tuple[int, int, int]:
    counts = store.counts("nps", clock.now(), timedelta(days=1))
    return counts.claimed, counts.void, counts.claimed_24h


def test_gc_deleting_lists_leaves_claimed_and_void_unchanged(
    client, store, clock, settings, linkpool: LinkPool
):
    first = provision_list(client, store, clock, ttl=timedelta(days=3))
    for n in range(3):
        linkpool.claim("nps", recipient=f"r{n}")
    clock.advance(timedelta(days=4))
    provision_list(client, store, clock, ttl=timedelta(days=30))
    linkpool.claim("nps", recipient="fresh")
    size = store.get_list(first).size

    report = collect(settings, client, store, clock)

    assert report.lists_deleted == 1
    assert store.get_list(first).state == ListState.DELETED
    assert claim_totals(store, clock) == (4, size - 3, 1)
    assert collect(settings, client, store, clock).lists_deleted == 0
    assert claim_totals(store, clock) == (4, size - 3, 1)


def test_gc_deleting_answered_lists_leaves_answered_and_finished_unchanged(
    client, store, clock, settings, linkpool: LinkPool
):
    first = provision_list(client, store, clock, ttl=timedelta(days=3))
    claims = [linkpool.claim("nps", recipient=f"r{n}") for n in range(3)]
    changes = [
        ResponseChange(claim.link_id, f"R_{n}", n == 0, clock.now(), None)
        for n, claim in enumerate(claims[:2])
    ]
    store.record_responses(changes)
    clock.advance(timedelta(days=4))

    def answers() -> tuple[int, int]:
        counts = store.response_counts("nps", clock.now())
        return counts.answered, counts.finished

    assert answers() == (2, 1)
    assert collect(settings, client, store, clock).lists_deleted == 1
    assert store.get_list(first).state == ListState.DELETED
    assert answers() == (2, 1)


def test_a_gc_whose_lease_is_taken_over_stops_before_the_next_delete(
    sim, client, store, clock, settings, monkeypatch
):
    first = provision_list(client, store, clock, ttl=timedelta(days=3))
    second = provision_list(client, store, clock, ttl=timedelta(days=3))
    clock.advance(timedelta(days=4))
    real_delete = client.delete_distribution

    def delete_then_lose_the_lease(distribution_id: str) -> None:
        real_delete(distribution_id)
        with store.write() as connection:
            connection.execute(sa.update(leases).values(holder="rival:1:ffff"))

    monkeypatch.setattr(client, "delete_distribution", delete_then_lose_the_lease)
    calls_before = Counter(sim.calls)

    with pytest.raises(LeaseLost, match="taken over by rival"):
        collect(settings, client, store, clock)

    calls = Counter(sim.calls) - calls_before
    deletes = {key: count for key, count in calls.items() if key.startswith("DELETE")}
    assert deletes == {DELETE_DISTRIBUTION: 1}  # nothing deleted after the takeover
    assert store.get_list(first).state == ListState.REAPING  # not recorded: the next gc resumes
    assert store.get_list(second).state == ListState.READY


def test_cli_gc_names_a_live_holder_and_exits_0(cli, store, clock):
    with Lease(store, "gc", clock, holder="web-3:17:beef"):
        result = cli("gc")

    assert result.exit_code == 0
    assert result.stderr.startswith("linkpool: gc is already running: held by host web-3, pid 17")
