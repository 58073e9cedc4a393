"""The simulator speaks plain HTTP like Qualtrics: strict, paginated, faulty on demand."""

from __future__ import annotations

import ast
import threading
import tomllib
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

import linkpool
from linkpool.clock import ManualClock
from linkpool.config import settings_from_mapping
from linkpool.qualtrics.endpoints import ENDPOINTS, MAX_IMPORT_BYTES
from linkpool.simulator import (
    DEFAULT_DIRECTORY_ID,
    DEFAULT_SURVEY_ID,
    DEFAULT_TOKEN,
    Faults,
    LinkCheck,
    Simulator,
    config_block,
    running,
)

SURVEY = "SV_SimSurvey0001"
DIRECTORY = "POOL_SimDirectory01"
LISTS = f"/directories/{DIRECTORY}/mailinglists"


@pytest.fixture
def sim(clock: ManualClock) -> Simulator:
    return Simulator(clock=clock, links_page_size=4)


@pytest.fixture
def http(sim: Simulator) -> Iterator[httpx.Client]:
    with httpx.Client(
        transport=sim.transport(), base_url=sim.base_url, headers={"X-API-TOKEN": sim.token}
    ) as client:
        yield client


def result(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["meta"]["httpStatus"].startswith(f"{status} - ")
    uuid.UUID(body["meta"]["requestId"])
    return body.get("result")


def error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    meta = response.json()["meta"]
    assert meta["httpStatus"].startswith(f"{status} - ")
    uuid.UUID(meta["requestId"])
    assert meta["error"]["errorCode"]
    return meta["error"]


def directory_contact(sim: Simulator, mailing_list_id: str, link: dict[str, Any]) -> str:
    """The ``CID_`` behind a link whose listing gave its list entry (``CGC_``)."""
    lookup_ids = sim.mailing_lists()[mailing_list_id]["lookupIds"]
    (contact_id,) = [cid for cid, lookup in lookup_ids.items() if lookup == link["contactId"]]
    return str(contact_id)


def create_list(http: httpx.Client, name: str = "linkpool/test/1") -> str:
    return result(http.post(LISTS, json={"name": name}))["id"]


def import_contacts(http: httpx.Client, mailing_list_id: str, contacts: list[dict]) -> dict:
    """Import and poll until complete, as a client would."""
    path = f"{LISTS}/{mailing_list_id}/transactioncontacts"
    job = result(http.post(path, json={"contacts": contacts}), 202)
    while True:
        status = result(http.get(f"{path}/{job['id']}"))
        if status["percentComplete"] == 100:
            return status


def placeholders(count: int, prefix: str = "p") -> list[dict]:
    return [{"extRef": f"{prefix}#{n}", "embeddedData": {"slot": str(n)}} for n in range(count)]


def distribution_body(mailing_list_id: str, **overrides: Any) -> dict[str, Any]:
    body = {
        "surveyId": SURVEY,
        "linkType": "Individual",
        "description": "linkpool/test/1",
        "action": "CreateDistribution",
        "expirationDate": "2026-12-31T00:00:00Z",
        "mailingListId": mailing_list_id,
    }
    body.update(overrides)
    return body


def distribute(http: httpx.Client, contacts: int = 10) -> tuple[str, str]:
    mailing_list_id = create_list(http)
    import_contacts(http, mailing_list_id, placeholders(contacts))
    created = result(http.post("/distributions", json=distribution_body(mailing_list_id)))
    return mailing_list_id, created["id"]


def all_links(http: httpx.Client, distribution_id: str) -> list[dict]:
    return list(pages(http, f"/distributions/{distribution_id}/links?surveyId={SURVEY}"))


def pages(http: httpx.Client, url: str) -> Iterator[dict]:
    while url:
        page = result(http.get(url))
        yield from page["elements"]
        url = page["nextPage"]


# --- auth and envelope ----------------------------------------------------------------------


def test_whoami_answers_in_the_envelope(http: httpx.Client) -> None:
    me = result(http.get("/whoami"))
    assert me["userId"].startswith("UR_")
    assert me["datacenter"] == "sim1"


def test_a_wrong_token_is_401_and_a_missing_one_400(sim: Simulator) -> None:
    with httpx.Client(transport=sim.transport(), base_url=sim.base_url) as anonymous:
        assert error(anonymous.get("/whoami"), 400)["errorCode"] == "ATP_2"
        wrong = error(anonymous.get("/whoami", headers={"X-API-TOKEN": "nope"}), 401)
    assert wrong["errorMessage"] == "Unrecognized X-API-TOKEN."


def test_unknown_paths_and_methods_are_refused(http: httpx.Client) -> None:
    error(http.get("/surveys"), 404)
    error(http.patch(LISTS), 405)


def test_a_wrong_directory_is_404(http: httpx.Client) -> None:
    message = error(http.get("/directories/POOL_OtherDirectory1/mailinglists"), 404)
    assert "POOL_OtherDirectory1" in message["errorMessage"]


def test_calls_are_counted_by_templated_endpoint(sim: Simulator, http: httpx.Client) -> None:
    mailing_list_id = create_list(http)
    http.get(f"{LISTS}/{mailing_list_id}")
    http.get(f"{LISTS}/{mailing_list_id}")
    assert sim.calls == {
        "POST /directories/{directoryId}/mailinglists": 1,
        "GET /directories/{directoryId}/mailinglists/{mailingListId}": 2,
    }


# --- mailing lists and contacts -------------------------------------------------------------


def test_unknown_json_keys_are_refused(http: httpx.Client) -> None:
    refused = error(http.post(LISTS, json={"name": "x", "color": "red"}), 400)
    assert refused["errorMessage"] == "Unexpected json key provided: color"


def test_invalid_json_and_missing_name_are_refused(http: httpx.Client) -> None:
    error(http.post(LISTS, content=b"{not json"), 400)
    assert "name" in error(http.post(LISTS, json={}), 400)["errorMessage"]


def test_mailing_lists_paginate_with_full_next_page_urls(sim: Simulator, http: httpx.Client):
    created = [create_list(http, f"list-{n}") for n in range(5)]
    first = result(http.get(LISTS, params={"pageSize": 2}))
    assert [e["mailingListId"] for e in first["elements"]] == created[:2]
    assert first["nextPage"].startswith(f"{sim.base_url}/directories/{DIRECTORY}/mailinglists?")
    assert "skipToken=" in first["nextPage"]
    listed = list(pages(http, f"{LISTS}?pageSize=2"))
    assert [e["mailingListId"] for e in listed] == created
    assert all(e["contactCount"] == 0 for e in listed)
    error(http.get(LISTS, params={"pageSize": 101}), 400)
    error(http.get(LISTS, params={"skipToken": "garbage!"}), 400)


def test_deleting_a_list_hides_it(sim: Simulator, http: httpx.Client) -> None:
    mailing_list_id = create_list(http)
    assert result(http.delete(f"{LISTS}/{mailing_list_id}")) is None
    error(http.get(f"{LISTS}/{mailing_list_id}"), 404)
    error(http.delete(f"{LISTS}/{mailing_list_id}"), 404)
    assert result(http.get(LISTS))["elements"] == []
    assert sim.mailing_lists() == {}
    assert list(sim.deleted_mailing_lists()) == [mailing_list_id]


def test_contacts_paginate_at_most_50(http: httpx.Client) -> None:
    mailing_list_id = create_list(http)
    import_contacts(http, mailing_list_id, placeholders(120))
    path = f"{LISTS}/{mailing_list_id}/contacts"
    first = result(http.get(path))
    assert len(first["elements"]) == 50
    contacts = list(pages(http, f"{path}?pageSize=7"))
    assert [c["extRef"] for c in contacts] == [f"p#{n}" for n in range(120)]
    assert all(c["contactId"].startswith("CID_") for c in contacts)
    assert all(c["contactLookupId"].startswith("CGC_") for c in contacts)
    error(http.get(path, params={"pageSize": 51}), 400)


def test_updating_a_contact_merges_embedded_data(sim: Simulator, http: httpx.Client) -> None:
    mailing_list_id = create_list(http)
    import_contacts(http, mailing_list_id, [{"extRef": "a", "embeddedData": {"slot": "1"}}])
    (contact_id,) = sim.mailing_lists()[mailing_list_id]["contacts"]
    path = f"{LISTS}/{mailing_list_id}/contacts/{contact_id}"
    answer = http.put(path, json={"embeddedData": {"recipient": "cust-42"}})
    assert result(answer) is None
    assert sim.contact(contact_id)["embeddedData"] == {"slot": "1", "recipient": "cust-42"}
    assert result(http.get(path))["embeddedData"]["recipient"] == "cust-42"
    assert "Unexpected json key" in error(http.put(path, json={"tags": []}), 400)["errorMessage"]
    error(http.put(f"{LISTS}/{mailing_list_id}/contacts/CID_000000000000000", json={}), 404)


def test_removing_a_contact_from_a_list_keeps_it_in_the_directory(
    sim: Simulator, http: httpx.Client
) -> None:
    mailing_list_id = create_list(http)
    import_contacts(http, mailing_list_id, placeholders(2))
    contact_id = sim.mailing_lists()[mailing_list_id]["contacts"][0]
    result(http.delete(f"{LISTS}/{mailing_list_id}/contacts/{contact_id}"))
    assert contact_id not in sim.mailing_lists()[mailing_list_id]["contacts"]
    assert sim.contact(contact_id)["deleted"] is False
    result(http.delete(f"/directories/{DIRECTORY}/contacts/{contact_id}"))
    assert sim.contact(contact_id)["deleted"] is True
    error(http.delete(f"/directories/{DIRECTORY}/contacts/{contact_id}"), 404)


# --- imports ----------------------------------------------------------------------------------


def test_an_import_completes_over_several_polls(sim: Simulator, http: httpx.Client) -> None:
    mailing_list_id = create_list(http)
    path = f"{LISTS}/{mailing_list_id}/transactioncontacts"
    job = result(http.post(path, json={"contacts": placeholders(3)}), 202)
    assert job["id"].startswith("PGRS_")
    assert job["contacts"]["unprocessed"] == []
    progress = []
    for _ in range(3):
        status = result(http.get(f"{path}/{job['id']}"))
        progress.append(status["percentComplete"])
        if status["percentComplete"] < 100:
            assert sim.mailing_lists()[mailing_list_id]["contacts"] == []
    assert progress == [33.3, 66.7, 100.0]
    assert status["contacts"]["count"] == {"added": 3, "updated": 0, "failed": 0}
    assert len(sim.mailing_lists()[mailing_list_id]["contacts"]) == 3
    error(http.get(f"{path}/PGRS_000000000000000"), 404)


def test_the_directory_dedups_by_ext_ref_only(sim: Simulator, http: httpx.Client) -> None:
    first = create_list(http, "a")
    second = create_list(http, "b")
    import_contacts(http, first, [{"extRef": "same", "email": "x@example.com"}])
    status = import_contacts(
        http, second, [{"extRef": "same", "firstName": "Ann"}, {"email": "x@example.com"}]
    )
    assert status["contacts"]["count"] == {"added": 1, "updated": 1, "failed": 0}
    shared = sim.mailing_lists()[first]["contacts"][0]
    assert shared in sim.mailing_lists()[second]["contacts"]
    assert sim.contact(shared)["firstName"] == "Ann"


def test_an_import_reports_contacts_it_cannot_take(http: httpx.Client) -> None:
    mailing_list_id = create_list(http)
    contacts = [{"extRef": "ok"}, {"email": "not-an-address"}, {"embeddedData": {"a": [1]}}]
    path = f"{LISTS}/{mailing_list_id}/transactioncontacts"
    job = result(http.post(path, json={"contacts": contacts}), 202)
    assert job["contacts"]["unprocessed"] == [1, 2]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"contacts": [{"extRef": "a", "email": None}]}, "Null value"),
        ({"contacts": [{"extRef": "a", "embeddedData": {"x": None}}]}, "Null value"),
        ({"contacts": [{"extRef": "a", "nickname": "b"}]}, "Unexpected json key provided"),
        ({"people": []}, "Unexpected json key provided: people"),
        ({"contacts": []}, "non-empty"),
    ],
)
def test_imports_refuse_nulls_and_unknown_keys(http: httpx.Client, body: dict, message: str):
    path = f"{LISTS}/{create_list(http)}/transactioncontacts"
    assert message in error(http.post(path, json=body), 400)["errorMessage"]


def test_an_import_holds_at_most_10000_contacts(http: httpx.Client) -> None:
    path = f"{LISTS}/{create_list(http)}/transactioncontacts"
    result(http.post(path, content=b'{"contacts": [' + b",".join([b"{}"] * 10_000) + b"]}"), 202)
    too_many = b'{"contacts": [' + b",".join([b"{}"] * 10_001) + b"]}"
    assert "10000" in error(http.post(path, content=too_many), 400)["errorMessage"]


def test_an_import_is_at_most_5_megabytes(http: httpx.Client) -> None:
    path = f"{LISTS}/{create_list(http)}/transactioncontacts"
    huge = b'{"contacts": [{"firstName": "' + b"x" * (5 * 1024 * 1024) + b'"}]}'
    assert "too large" in error(http.post(path, content=huge), 400)["errorMessage"]


def test_the_import_limit_is_the_one_the_client_splits_by(http: httpx.Client) -> None:
    path = f"{LISTS}/{create_list(http)}/transactioncontacts"
    prefix, suffix = b'{"contacts": [{"firstName": "', b'"}]}'
    fill = MAX_IMPORT_BYTES - len(prefix) - len(suffix)
    at_the_limit = prefix + b"x" * fill + suffix
    result(http.post(path, content=at_the_limit), 202)
    over = prefix + b"x" * (fill + 1) + suffix
    assert str(MAX_IMPORT_BYTES) in error(http.post(path, content=over), 400)["errorMessage"]


def test_it_serves_every_endpoint_the_client_calls(sim: Simulator) -> None:
    served = {route.key for route in sim.routes()}
    assert {endpoint.key for endpoint in ENDPOINTS.values()} <= served


def test_its_defaults_are_declared_once() -> None:
    sim = Simulator()
    assert (sim.token, sim.directory_id) == (DEFAULT_TOKEN, DEFAULT_DIRECTORY_ID)
    assert set(sim.brand.surveys) == {DEFAULT_SURVEY_ID}
    assert (DEFAULT_SURVEY_ID, DEFAULT_DIRECTORY_ID) == (SURVEY, DIRECTORY)


# --- distributions and links ----------------------------------------------------------------


def test_a_distribution_makes_one_link_per_contact(sim: Simulator, http: httpx.Client) -> None:
    mailing_list_id, distribution_id = distribute(http, contacts=10)
    assert distribution_id.startswith("EMD_") and len(distribution_id) == 19
    links = all_links(http, distribution_id)
    assert len(links) == 10
    link = links[0]
    assert set(link) == {
        "contactId", "transactionId", "link", "linkExpiration", "exceededContactFrequency",
        "status", "firstName", "lastName", "externalDataReference", "email", "unsubscribed",
    }  # fmt: skip
    assert link["status"] == "Email not sent"
    assert link["linkExpiration"] == "2026-12-31T00:00:00Z"
    lookup_id = link["contactId"]  # the list entry, as Qualtrics' example shows
    assert lookup_id.startswith("CGC_")
    assert lookup_id in sim.mailing_lists()[mailing_list_id]["lookupIds"].values()
    assert link["link"] == (
        f"https://sim1.qualtrics.com/jfe/form/{SURVEY}"
        f"?Q_DL={distribution_id}_SimSurvey0001_{lookup_id}&Q_CHL=gl"
    )
    assert [entry["externalDataReference"] for entry in links] == [f"p#{n}" for n in range(10)]


def test_links_paginate_with_the_configured_page_size(sim: Simulator, http: httpx.Client):
    _, distribution_id = distribute(http, contacts=10)
    first = result(http.get(f"/distributions/{distribution_id}/links", params={"surveyId": SURVEY}))
    assert len(first["elements"]) == 4
    assert first["nextPage"].startswith(f"{sim.base_url}/distributions/{distribution_id}/links?")
    assert len(all_links(http, distribution_id)) == 10
    assert sim.calls["GET /distributions/{distributionId}/links"] == 4


def test_the_links_call_needs_the_matching_survey_id(http: httpx.Client) -> None:
    _, distribution_id = distribute(http, contacts=1)
    path = f"/distributions/{distribution_id}/links"
    assert "surveyId" in error(http.get(path), 400)["errorMessage"]
    error(http.get(path, params={"surveyId": "SV_OtherSurvey0001"}), 404)


def test_distributions_are_listed_per_survey_and_fetched(http: httpx.Client) -> None:
    mailing_list_id, distribution_id = distribute(http, contacts=1)
    listed = result(http.get("/distributions", params={"surveyId": SURVEY}))["elements"]
    assert [(d["id"], d["description"]) for d in listed] == [(distribution_id, "linkpool/test/1")]
    assert listed[0]["recipients"]["mailingListId"] == mailing_list_id
    assert listed[0]["surveyLink"]["surveyId"] == SURVEY
    assert result(http.get(f"/distributions/{distribution_id}"))["id"] == distribution_id
    other = http.get("/distributions", params={"surveyId": "SV_OtherSurvey0001"})
    assert result(other)["elements"] == []
    error(http.get("/distributions"), 400)


@pytest.mark.parametrize(
    ("expiration", "read_as"),
    [
        ("2026-12-31T00:00:00Z", "2026-12-31T00:00:00+00:00"),
        # naive: read in the account's zone (America/Chicago by default, UTC-6 in December)
        ("2026-12-31 00:00:00", "2026-12-31T06:00:00+00:00"),
    ],
)
def test_both_expiration_forms_are_accepted(
    sim: Simulator, http: httpx.Client, expiration: str, read_as: str
) -> None:
    mailing_list_id = create_list(http)
    import_contacts(http, mailing_list_id, placeholders(1))
    body = distribution_body(mailing_list_id, expirationDate=expiration)
    distribution_id = result(http.post("/distributions", json=body))["id"]
    assert sim.distributions()[distribution_id]["expirationDate"].isoformat() == read_as


@pytest.mark.parametrize(
    ("overrides", "status", "message"),
    [
        ({"contactId": "CID_x"}, 400, "Unexpected json key provided: contactId"),
        ({"linkType": "Anonymous"}, 400, "linkType"),
        ({"action": "CreateTransactionBatchDistribution"}, 400, "action"),
        ({"expirationDate": "31/12/2026"}, 400, "expirationDate"),
        ({"expirationDate": "2026-01-01 00:00:00"}, 400, "future"),
        ({"description": None}, 400, "Null value"),
        ({"surveyId": "SV_NoSuchSurvey01"}, 404, "Survey not found"),
        ({"mailingListId": "CG_000000000000000"}, 404, "Mailing list not found"),
    ],
)
def test_distributions_are_strict(
    http: httpx.Client, overrides: dict, status: int, message: str
) -> None:
    mailing_list_id = create_list(http)
    import_contacts(http, mailing_list_id, placeholders(1))
    body = distribution_body(mailing_list_id, **overrides)
    assert message in error(http.post("/distributions", json=body), status)["errorMessage"]


def test_a_distribution_needs_every_key(http: httpx.Client) -> None:
    body = distribution_body(create_list(http))
    del body["expirationDate"]
    assert "expirationDate" in error(http.post("/distributions", json=body), 400)["errorMessage"]


def test_a_distribution_needs_an_active_survey(sim: Simulator, http: httpx.Client) -> None:
    mailing_list_id = create_list(http)
    import_contacts(http, mailing_list_id, placeholders(1))
    sim.set_survey_active(SURVEY, False)
    refused = error(http.post("/distributions", json=distribution_body(mailing_list_id)), 400)
    assert "not active" in refused["errorMessage"]
    sim.set_survey_active(SURVEY, True)
    result(http.post("/distributions", json=distribution_body(mailing_list_id)))


def test_a_distribution_needs_a_non_empty_list(http: httpx.Client) -> None:
    body = distribution_body(create_list(http))
    assert "no contacts" in error(http.post("/distributions", json=body), 400)["errorMessage"]


# --- the respondent's view --------------------------------------------------------------------


def test_a_link_works_once(sim: Simulator, http: httpx.Client) -> None:
    _, distribution_id = distribute(http, contacts=2)
    url = all_links(http, distribution_id)[0]["link"]
    assert sim.open_link(url) == LinkCheck(True, "ok")
    assert sim.open_link(url).ok
    assert sim.respond(url).ok
    assert sim.open_link(url) == LinkCheck(False, "already used")
    assert sim.respond(url) == LinkCheck(False, "already used")
    assert sim.open_link(url + "x") == LinkCheck(False, "unknown")


def test_a_response_snapshots_embedded_data_written_before_it(sim: Simulator, http: httpx.Client):
    mailing_list_id, distribution_id = distribute(http, contacts=1)
    link = all_links(http, distribution_id)[0]
    contact_id = directory_contact(sim, mailing_list_id, link)
    path = f"{LISTS}/{mailing_list_id}/contacts/{contact_id}"
    result(http.put(path, json={"embeddedData": {"recipient": "cust-42"}}))
    sim.respond(link["link"])
    (response,) = sim.responses()
    assert response.embedded_data == {"slot": "0", "recipient": "cust-42"}
    assert response.contact_id == contact_id


def test_links_expire_at_the_expiration_date(
    sim: Simulator, http: httpx.Client, clock: ManualClock
) -> None:
    _, distribution_id = distribute(http, contacts=1)
    url = sim.links(distribution_id)[0]
    expires_at = sim.distributions()[distribution_id]["expirationDate"]
    clock.advance(expires_at - clock.now() - timedelta(seconds=1))
    assert sim.open_link(url).ok
    clock.advance(timedelta(seconds=1))
    assert sim.open_link(url) == LinkCheck(False, "expired")


def test_deleting_a_distribution_breaks_its_links(sim: Simulator, http: httpx.Client) -> None:
    _, distribution_id = distribute(http, contacts=3)
    urls = sim.links(distribution_id)
    assert result(http.delete(f"/distributions/{distribution_id}")) is None
    assert {sim.open_link(url).reason for url in urls} == {"distribution deleted"}
    error(http.get(f"/distributions/{distribution_id}"), 404)
    error(http.get(f"/distributions/{distribution_id}/links", params={"surveyId": SURVEY}), 404)
    assert sim.distributions() == {}
    assert list(sim.deleted_distributions()) == [distribution_id]


def test_deleting_a_list_breaks_its_links(sim: Simulator, http: httpx.Client) -> None:
    mailing_list_id, distribution_id = distribute(http, contacts=3)
    result(http.delete(f"{LISTS}/{mailing_list_id}"))
    assert {sim.open_link(url).reason for url in sim.links(distribution_id)} == {"list deleted"}


def test_deleting_a_contact_breaks_its_link_only(sim: Simulator, http: httpx.Client) -> None:
    mailing_list_id, distribution_id = distribute(http, contacts=2)
    first, second = all_links(http, distribution_id)
    contact_id = directory_contact(sim, mailing_list_id, first)
    result(http.delete(f"/directories/{DIRECTORY}/contacts/{contact_id}"))
    assert sim.open_link(first["link"]) == LinkCheck(False, "contact deleted")
    assert sim.open_link(second["link"]).ok


# --- faults -----------------------------------------------------------------------------------


def test_rate_limit_answers_429_with_retry_after(
    sim: Simulator, http: httpx.Client, clock: ManualClock
) -> None:
    sim.faults.rate_limit_per_minute = 2
    result(http.get("/whoami"))
    result(http.get("/whoami"))
    limited = http.get("/whoami")
    assert error(limited, 429)["retryAfter"] == 30
    assert limited.headers["Retry-After"] == "30"
    clock.advance(timedelta(seconds=30))
    result(http.get("/whoami"))
    sim.faults.rate_limit_per_minute = None
    for _ in range(5):
        result(http.get("/whoami"))


def test_error_rate_fails_before_doing_anything(sim: Simulator, http: httpx.Client) -> None:
    sim.faults.error_rate = 1.0
    statuses = {http.post(LISTS, json={"name": "x"}).status_code for _ in range(20)}
    assert statuses == {500, 503}
    assert sim.mailing_lists() == {}
    sim.faults.error_rate = 0.0
    create_list(http)


def test_lost_responses_take_effect_but_answer_504(sim: Simulator, http: httpx.Client) -> None:
    sim.faults.lost_response_rate = 1.0
    error(http.post(LISTS, json={"name": "lost"}), 504)
    assert [m["name"] for m in sim.mailing_lists().values()] == ["lost"]
    result(http.get(LISTS))


def test_error_rates_follow_the_seed(clock: ManualClock) -> None:
    def statuses(seed: int) -> list[int]:
        sim = Simulator(clock=clock, seed=seed)
        sim.faults.error_rate = 0.5
        headers = {"X-API-TOKEN": sim.token}
        with httpx.Client(
            transport=sim.transport(), base_url=sim.base_url, headers=headers
        ) as http:
            return [http.get("/whoami").status_code for _ in range(30)]

    assert statuses(1) == statuses(1)
    assert statuses(1) != statuses(2)
    assert {200, 500, 503} >= set(statuses(1)) >= {200}


def test_link_lag_omits_the_same_links_for_a_while(
    sim: Simulator, http: httpx.Client, clock: ManualClock
) -> None:
    sim.faults.link_lag = timedelta(minutes=10)
    sim.faults.link_lag_fraction = 0.5
    _, distribution_id = distribute(http, contacts=40)
    early = [link["contactId"] for link in all_links(http, distribution_id)]
    assert 0 < len(early) < 40
    assert [link["contactId"] for link in all_links(http, distribution_id)] == early
    clock.advance(timedelta(minutes=10))
    assert len(all_links(http, distribution_id)) == 40


def test_exceeded_contact_frequency_marks_links_that_do_not_open(
    sim: Simulator, http: httpx.Client
) -> None:
    sim.faults.exceeded_contact_frequency_rate = 1.0
    _, distribution_id = distribute(http, contacts=2)
    links = all_links(http, distribution_id)
    assert all(link["exceededContactFrequency"] for link in links)
    assert sim.open_link(links[0]["link"]) == LinkCheck(False, "contact frequency exceeded")


def test_faults_refuse_impossible_values() -> None:
    with pytest.raises(ValueError, match="error_rate"):
        Faults(error_rate=1.5)
    with pytest.raises(ValueError, match="rate_limit_per_minute"):
        Faults(rate_limit_per_minute=0)
    with pytest.raises(ValueError, match="latency"):
        Faults(latency=-1)


# --- determinism, threads, serving ------------------------------------------------------------


def test_ids_follow_the_seed(clock: ManualClock) -> None:
    def ids(seed: int) -> list[str]:
        sim = Simulator(clock=clock, seed=seed)
        with httpx.Client(
            transport=sim.transport(), base_url=sim.base_url, headers={"X-API-TOKEN": sim.token}
        ) as http:
            return [create_list(http) for _ in range(3)]

    assert ids(7) == ids(7)
    assert ids(7) != ids(8)
    assert all(len(i) == 18 and i[3:].isalnum() for i in ids(7))


def test_concurrent_requests_are_safe(sim: Simulator, http: httpx.Client) -> None:
    created: list[str] = []

    def worker() -> None:
        for _ in range(20):
            created.append(create_list(http))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(created)) == 80
    assert set(sim.mailing_lists()) == set(created)


def test_serving_over_http(sim: Simulator) -> None:
    with running(sim) as base_url:
        assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/API/v3")
        with httpx.Client(base_url=base_url, headers={"X-API-TOKEN": sim.token}) as http:
            for n in range(3):
                create_list(http, f"list-{n}")
            page = result(http.get(LISTS, params={"pageSize": 2}))
            assert page["nextPage"].startswith(f"{base_url}/directories/")
            assert len(list(pages(http, page["nextPage"]))) == 1


def test_the_config_block_is_valid_linkpool_configuration(sim: Simulator) -> None:
    with running(sim):
        block = config_block(sim)
    settings = settings_from_mapping(tomllib.loads(block))
    assert settings.qualtrics is not None
    assert settings.qualtrics.base_url == sim.base_url
    assert settings.qualtrics.directory_id == DIRECTORY
    assert "sim-token" in block
    assert "secret" not in config_block(Simulator(token="secret"))


def test_a_served_simulator_is_controlled_over_http(
    sim: Simulator, http: httpx.Client, clock: ManualClock
) -> None:
    _, distribution_id = distribute(http, contacts=1)
    url = sim.links(distribution_id)[0]
    control = sim.base_url.removesuffix("/API/v3") + "/_simulator"
    changed = result(http.put(f"{control}/faults", json={"error_rate": 0.5}))
    assert changed["error_rate"] == 0.5
    assert sim.faults.error_rate == 0.5
    lag = result(http.put(f"{control}/faults", json={"link_lag": 60, "error_rate": 0}))
    assert lag["link_lag"] == 60.0
    assert sim.faults.link_lag == timedelta(minutes=1)
    error(http.put(f"{control}/faults", json={"error_rate": 2}), 400)
    error(http.put(f"{control}/faults", json={"speed": 1}), 400)
    opened = result(http.post(f"{control}/open-link", json={"url": url}))
    assert opened == {"ok": True, "reason": "ok"}
    assert result(http.post(f"{control}/respond", json={"url": url}))["ok"]
    assert result(http.post(f"{control}/respond", json={"url": url}))["reason"] == ("already used")
    assert "/_simulator" not in " ".join(sim.calls)


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, at top level or inside a function."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("qualtrics", ("linkpool.simulator", "linkpool.demo", "linkpool.cli")),
        ("simulator", ("linkpool.demo", "linkpool.cli")),
        ("demo.py", ("linkpool.cli",)),
    ],
)
def test_imports_point_one_way(package: str, forbidden: tuple[str, ...]) -> None:
    root = Path(linkpool.__file__).parent / package
    for path in [root] if root.is_file() else sorted(root.rglob("*.py")):
        wrong = {name for name in imported_modules(path) if name.startswith(forbidden)}
        assert not wrong, f"{path.name} imports {wrong}"
