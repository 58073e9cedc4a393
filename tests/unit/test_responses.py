"""``linkpool responses`` against the simulator, on SQLite and PostgreSQL: the join, the
unclaimed response, enrichment in bulk, idempotence, lost answers, refusals, stopping."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import threading
import zipfile
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from linkpool.archive import archive
from linkpool.config import PoolSettings, Settings
from linkpool.export import write_claims
from linkpool.models import Enrichment, ListState, links, response_cursors, response_updates
from linkpool.pool import LinkPool
from linkpool.qualtrics import endpoints as api
from linkpool.responses import track_responses
from linkpool.responses.stream import iter_export
from linkpool.simulator import Simulator
from linkpool.store import Store
from linkpool.sync import sync
from tests.provision import SURVEY_ID, provision_list

BULK = api.START_RESPONSE_UPDATE.key
SINGLE = api.UPDATE_RESPONSE.key


@pytest.fixture(params=["sqlite", "postgres"])
def database(request, sqlite_url) -> tuple[str, sa.engine.Engine]:
    if request.param == "sqlite":
        return sqlite_url, request.getfixturevalue("engine")
    return request.getfixturevalue("postgres_url"), request.getfixturevalue("pg_engine")


@pytest.fixture
def db_store(database) -> Store:
    return Store(database[1])


@pytest.fixture
def sim(clock) -> Simulator:
    return Simulator(clock=clock)


@pytest.fixture
def client(sim):
    with sim.client() as client:
        yield client


def make_settings(database_url: str, enrichment: str = "response") -> Settings:
    pool = PoolSettings(
        name="nps",
        survey_id=SURVEY_ID,
        link_ttl=timedelta(days=30),
        min_remaining=timedelta(days=1),
        embedded_data={"source": "linkpool"},
        enrichment=enrichment,
    )
    return Settings(database_url=database_url, pools={"nps": pool})


@pytest.fixture
def settings(database) -> Settings:
    return make_settings(database[0])


def pool_for(settings: Settings, database, clock) -> LinkPool:
    return LinkPool.from_settings(settings, clock=clock, engine=database[1])


answered_at: list = []


@pytest.fixture
def scene(sim, client, db_store, clock, settings, database):
    """Six links; four claimed; claims 0 and 1 answered, 2 answered but not finished; one
    unclaimed link answered too (a leaked link, or a test by hand)."""
    answered_at.clear()
    provision_list(client, db_store, clock, size=6, ttl=timedelta(days=10))
    lp = pool_for(settings, database, clock)
    claims = [
        lp.claim("nps", recipient=f"cust-{n}", data={"order": f"A-{n}", "n": n}) for n in range(4)
    ]
    clock.advance(timedelta(minutes=5))
    answered_at.append(clock.now().replace(microsecond=0))  # exports carry whole seconds
    assert sim.respond(claims[0].url).ok and sim.respond(claims[1].url).ok
    assert sim.respond(claims[2].url, finished=False).ok
    claimed = {claim.url for claim in claims}
    unclaimed_url = next(
        url for d in sim.distributions() for url in sim.links(d) if url not in claimed
    )
    assert sim.respond(unclaimed_url).ok
    clock.advance(timedelta(minutes=5))
    return claims


def link_rows(store: Store) -> list[dict[str, Any]]:
    with store.read() as connection:
        query = sa.select(links).order_by(links.c.id)
        return [dict(row) for row in connection.execute(query).mappings()]


def response_of(sim: Simulator, url: str):
    contact_id = next(link.contact_id for link in sim.brand.links.values() if link.url == url)
    return next(r for r in sim.responses() if r.contact_id == contact_id)


def test_the_answered_claims_are_marked_and_the_unclaimed_response_reported(
    sim, client, db_store, clock, settings, scene
):
    report = track_responses(settings, client, db_store, clock)

    assert report.errors == []
    assert (report.responses_read, report.answered, report.unclaimed) == (4, 3, 1)
    by_recipient = {row["recipient"]: row for row in link_rows(db_store) if row["recipient"]}
    for n, finished in ((0, True), (1, True), (2, False)):
        row = by_recipient[f"cust-{n}"]
        assert row["response_id"] == response_of(sim, scene[n].url).id
        assert row["response_finished"] is finished
        assert row["responded_at"] == answered_at[0]
        assert row["enrichment"] == Enrichment.DONE
    assert by_recipient["cust-3"]["response_id"] is None
    unclaimed = [row for row in link_rows(db_store) if row["recipient"] is None]
    assert all(row["response_id"] is None for row in unclaimed)


def test_the_claim_data_lands_on_the_responses_in_one_bulk_job(
    sim, client, db_store, clock, settings, scene
):
    report = track_responses(settings, client, db_store, clock)

    assert report.enriched == 3
    assert report.api_calls[BULK] == 1 and report.api_calls[SINGLE] == 0
    for n in range(3):
        data = response_of(sim, scene[n].url).embedded_data
        assert data == {
            "source": "linkpool",
            "order": f"A-{n}",
            "n": str(n),
            "linkpool_recipient": f"cust-{n}",
        }


def test_a_second_run_changes_nothing_and_sends_no_update(
    sim, client, db_store, clock, settings, scene
):
    track_responses(settings, client, db_store, clock)
    before = link_rows(db_store)
    clock.advance(timedelta(minutes=10))

    again = track_responses(settings, client, db_store, clock)

    assert (again.answered, again.unclaimed, again.enriched) == (0, 0, 0)
    assert again.responses_read == 4  # the overlap reads the boundary again
    assert BULK not in again.api_calls and SINGLE not in again.api_calls
    assert link_rows(db_store) == before


def test_status_and_export_show_the_responses(
    sim, client, db_store, clock, settings, scene, database
):
    track_responses(settings, client, db_store, clock)
    lp = pool_for(settings, database, clock)

    responses = db_store.response_counts("nps", clock.now())
    assert (responses.answered, responses.answered_24h, responses.finished) == (3, 3, 2)
    assert responses.unclaimed_responses == 1
    assert lp.counts("nps").claimed == 4
    unanswered = exported(db_store, answered=False)
    assert [row["recipient"] for row in unanswered] == ["cust-3"]
    answered = exported(db_store, answered=True)
    assert [row["finished"] for row in answered] == [True, True, False]
    assert all(row["response_id"].startswith("R_") for row in answered)
    assert {row["responded_at"] for row in answered} == {answered_at[0].isoformat()}
    rows = list(csv.DictReader(io.StringIO(exported_text(db_store, "csv", answered=True))))
    assert [row["finished"] for row in rows] == ["true", "true", "false"]
    assert [row["response_id"] for row in rows] == [row["response_id"] for row in answered]
    assert {row["responded_at"] for row in rows} == {answered_at[0].isoformat()}


def test_responses_exported_after_gc_deleted_their_list_still_count(
    client, db_store, clock, settings, scene, tmp_path
):
    """A late export: gc deleted the list before the run read its responses. They are added
    to the deleted lists' totals, once; archiving the claims changes nothing."""
    clock.advance(timedelta(days=11))
    (listed,) = db_store.lists_in_states([ListState.READY], pool="nps")
    assert db_store.begin_reaping(listed.id, state=ListState.READY, now=clock.now()) == 2
    assert db_store.close_list(listed.id, now=clock.now())

    def figures() -> tuple[int, int, int]:
        counts = db_store.response_counts("nps", clock.now())
        return counts.answered, counts.finished, counts.answered_24h

    assert figures() == (0, 0, 0)
    assert track_responses(settings, client, db_store, clock).answered == 3
    assert figures() == (3, 2, 0)
    track_responses(settings, client, db_store, clock)
    assert figures() == (3, 2, 0)
    assert archive(db_store, before=clock.now(), path=tmp_path / "a.jsonl.gz").removed == 4
    assert figures() == (3, 2, 0)


def exported_text(store: Store, fmt: str, **filters: Any) -> str:
    stream = io.StringIO()
    write_claims(store, "nps", stream, fmt, **filters)
    return stream.getvalue()


def exported(store: Store, **filters: Any) -> list[dict[str, Any]]:
    return json.loads(exported_text(store, "json", **filters))


def test_a_response_that_already_carries_the_data_needs_no_update(
    sim, client, db_store, clock, database
):
    """In ``both``, the contact write-back usually gets there first: the export shows it."""
    settings = make_settings(database[0], enrichment="both")
    provision_list(client, db_store, clock, size=3, ttl=timedelta(days=10))
    lp = pool_for(settings, database, clock)
    early = lp.claim("nps", recipient="cust-early", data={"order": "A-1"})
    sync(settings, client, db_store, clock)
    late = lp.claim("nps", recipient="cust-late", data={"order": "A-2"})
    assert sim.respond(early.url).ok and sim.respond(late.url).ok  # before late's write-back

    report = track_responses(settings, client, db_store, clock)

    assert report.enriched == 1 and report.api_calls[BULK] == 1
    assert response_of(sim, late.url).embedded_data["linkpool_recipient"] == "cust-late"
    states = {row["recipient"]: row["enrichment"] for row in link_rows(db_store)}
    assert states["cust-early"] == states["cust-late"] == Enrichment.DONE


def test_a_pool_without_response_enrichment_is_tracked_but_never_updated(
    sim, client, db_store, clock, database
):
    settings = make_settings(database[0], enrichment="none")
    provision_list(client, db_store, clock, size=2, ttl=timedelta(days=10))
    claim = pool_for(settings, database, clock).claim("nps", recipient="cust-1")
    assert sim.respond(claim.url).ok

    report = track_responses(settings, client, db_store, clock)

    assert report.answered == 1 and BULK not in report.api_calls
    (row,) = [row for row in link_rows(db_store) if row["recipient"]]
    assert row["writeback"] is None and row["enrichment"] is None
    assert "linkpool_recipient" not in response_of(sim, claim.url).embedded_data


def test_a_lost_bulk_answer_is_verified_by_the_next_export_not_sent_twice(
    sim, client, db_store, clock, settings, scene
):
    sim.faults = dataclasses.replace(sim.faults, lost_update_rate=1.0)
    first = track_responses(settings, client, db_store, clock)
    assert first.enrichment_unknown == 3 and first.enriched == 0
    sim.faults = dataclasses.replace(sim.faults, lost_update_rate=0.0)
    clock.advance(timedelta(hours=3))  # beyond the overlap: only the verification reaches back

    second = track_responses(settings, client, db_store, clock)

    assert BULK not in second.api_calls
    assert len(sim.brand.updates) == 1
    assert {row["enrichment"] for row in link_rows(db_store) if row["response_id"]} == {
        Enrichment.DONE
    }
    assert response_of(sim, scene[0].url).embedded_data["linkpool_recipient"] == "cust-0"


def test_a_refused_bulk_job_falls_back_to_one_update_each(
    sim, client, db_store, clock, settings, scene
):
    sim.faults = dataclasses.replace(sim.faults, refuse_bulk_updates=True)

    report = track_responses(settings, client, db_store, clock)

    assert report.api_calls[BULK] == 1 and report.api_calls[SINGLE] == 3
    assert report.enriched == 3
    assert response_of(sim, scene[1].url).embedded_data["order"] == "A-1"


def test_a_failed_export_is_reported_and_the_next_run_starts_again(
    sim, client, db_store, clock, settings, scene
):
    sim.faults = dataclasses.replace(sim.faults, export_failure_rate=1.0)
    failed = track_responses(settings, client, db_store, clock)
    assert failed.answered == 0 and "export" in failed.errors[0]
    sim.faults = dataclasses.replace(sim.faults, export_failure_rate=0.0)

    again = track_responses(settings, client, db_store, clock)

    assert again.errors == [] and again.answered == 3


def test_a_stop_during_a_slow_export_leaves_it_for_the_next_run(
    sim, client, db_store, clock, settings, scene
):
    sim.faults = dataclasses.replace(sim.faults, export_polls=50)
    stop = threading.Event()
    real_sleep = clock.sleep

    def sleep_then_stop(seconds: float) -> None:
        real_sleep(seconds)
        stop.set()

    clock.sleep = sleep_then_stop  # type: ignore[method-assign]
    stopped = track_responses(settings, client, db_store, clock, stop=stop)
    clock.sleep = real_sleep  # type: ignore[method-assign]
    assert stopped.answered == 0
    with db_store.read() as connection:
        cursor = connection.execute(sa.select(response_cursors)).mappings().one()
    assert cursor["export_progress_id"] is not None

    resumed = track_responses(settings, client, db_store, clock)

    assert resumed.answered == 3 and len(sim.brand.exports) == 1


def test_an_update_job_a_killed_run_left_running_is_polled_not_sent_again(
    sim, client, db_store, clock, settings, scene
):
    """A run killed after the bulk POST was answered: the job's progress id is stored."""
    real_poll = client.get_response_update

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the process dies here

    client.get_response_update = killed  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        track_responses(settings, client, db_store, clock)
    client.get_response_update = real_poll  # type: ignore[method-assign]
    clock.advance(timedelta(minutes=11))  # past the dead run's lease

    resumed = track_responses(settings, client, db_store, clock)

    assert BULK not in resumed.api_calls and resumed.enriched == 3
    with db_store.read() as connection:
        states = connection.execute(sa.select(response_updates.c.state)).scalars().all()
    assert states == ["complete"]


def test_the_export_is_streamed_not_held_whole(tmp_path) -> None:
    """An export of 20,000 responses is read in the memory of a few elements."""
    import tracemalloc

    element = {"responseId": "R_{}", "values": {"externalDataReference": "x", "finished": 1,
               "recordedDate": "2026-11-22T09:00:00Z", "note": "y" * 400}}  # fmt: skip
    path = tmp_path / "export.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("SV_x.json", "w") as member:
            member.write(b'{"responses": [')
            for n in range(20_000):
                item = dict(element, responseId=f"R_{n:015d}")
                member.write((b"," if n else b"") + json.dumps(item).encode())
            member.write(b"]}")
    document_size = 20_000 * len(json.dumps(element))
    with path.open("rb") as spool:
        tracemalloc.start()
        count = sum(1 for _ in iter_export(spool))
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()

    assert count == 20_000
    assert peak < document_size / 20


def test_an_export_that_is_not_a_zip_is_one_clear_error() -> None:
    from linkpool.errors import QualtricsError

    with pytest.raises(QualtricsError, match="not a zip"):
        list(iter_export(io.BytesIO(b"<html>proxy error</html>")))


def test_a_response_whose_id_is_not_an_id_is_skipped_not_fatal(caplog) -> None:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        responses = [
            {"responseId": "R_1,2", "values": {}},
            {"responseId": "R_Good01", "values": {"externalDataReference": "s1"}},
        ]
        zipped.writestr("responses.json", json.dumps({"responses": responses}))
    archive.seek(0)

    parsed = list(iter_export(archive))

    assert [response.response_id for response in parsed] == ["R_Good01"]
    assert "responseId that is not an id: skipped" in caplog.text
    assert "R_1,2" not in caplog.text


def test_the_cli_reports_runs_and_exits_1_when_a_pool_failed(
    tmp_path, sim, client, db_store, clock, scene, database, monkeypatch
):
    from click.testing import CliRunner

    from linkpool.cli import App, main

    config = tmp_path / "linkpool.toml"
    url = database[1].url.render_as_string(hide_password=False)
    config.write_text(
        f'[database]\nurl = "{url}"\n\n[pools.nps]\nsurvey_id = "{SURVEY_ID}"\n'
        'enrichment = "response"\nembedded_data = { source = "linkpool" }\n'
    )
    monkeypatch.setattr(
        "linkpool.cli.app.App.qualtrics_client", lambda app: sim.client(max_retries=0)
    )

    def run(*args: str):
        return CliRunner().invoke(main, [*args], obj=App(str(config), clock=clock))

    sim.faults = dataclasses.replace(sim.faults, export_failure_rate=1.0)
    failed = run("responses")
    assert failed.exit_code == 1
    assert "linkpool: responses: pool nps: the response export" in failed.stderr
    sim.faults = dataclasses.replace(sim.faults, export_failure_rate=0.0)

    done = run("responses", "--json")
    assert done.exit_code == 0, done.output
    assert {k: json.loads(done.stdout)[k] for k in ("answered", "unclaimed", "enriched")} == {
        "answered": 3,
        "unclaimed": 1,
        "enriched": 3,
    }
    unknown = run("responses", "--pool", "nope")
    assert unknown.exit_code == 2 and "Traceback" not in unknown.output
    unanswered = run("export", "nps", "--unanswered", "--format", "json")
    assert [row["recipient"] for row in json.loads(unanswered.stdout)] == ["cust-3"]


def test_an_erased_claim_is_tracked_but_its_response_gets_nothing(
    sim, client, db_store, clock, settings, scene, database
):
    """``forget`` before the enrichment: no recipient or data is sent for that claim."""
    lp = pool_for(settings, database, clock)
    lp.forget("cust-1")

    report = track_responses(settings, client, db_store, clock)

    assert report.answered == 3 and report.enriched == 2
    assert "linkpool_recipient" not in response_of(sim, scene[1].url).embedded_data
    assert response_of(sim, scene[0].url).embedded_data["linkpool_recipient"] == "cust-0"
    erased = next(row for row in link_rows(db_store) if row["erased_at"] is not None)
    assert erased["response_id"] is not None and erased["enrichment"] is None
