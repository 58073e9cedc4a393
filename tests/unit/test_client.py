"""QualtricsClient against respx: envelopes, typed errors, retries, throttle, pagination, secrecy."""

from __future__ import annotations

import json
import logging
import random
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from email.utils import format_datetime

import httpx
import pytest
import respx

from linkpool.clock import ManualClock
from linkpool.config import QualtricsSettings
from linkpool.errors import (
    AuthError,
    BadRequest,
    NotFound,
    OutcomeUnknown,
    QualtricsError,
    QualtricsTimeout,
    QualtricsUnreachable,
    RateLimited,
    ServerError,
)
from linkpool.qualtrics import ImportJob, ImportStatus, QualtricsClient
from linkpool.qualtrics.client import Access, survey_active
from linkpool.qualtrics.endpoints import ENDPOINTS, MAX_IMPORT_BYTES, MAX_IMPORT_CONTACTS

BASE = "https://iad1.qualtrics.com/API/v3"
TOKEN = "tok-Sup3rS3cret-9f8e7d"
DIRECTORY = "POOL_TestDirectory01"
LIST_ID = "CG_TestList000001"
SURVEY_ID = "SV_TestSurvey00001"
LISTS = "/directories/POOL_TestDirectory01/mailinglists"


class RecordingClock(ManualClock):
    """A ManualClock that remembers every sleep, so tests can assert backoff decisions."""

    def __init__(self) -> None:
        super().__init__(datetime(2026, 11, 22, 9, 0, tzinfo=UTC))
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        super().sleep(seconds)


def ok(result: dict | None = None, status: int = 200) -> httpx.Response:
    meta = {"httpStatus": f"{status} - OK", "requestId": "req-ok"}
    body = {"meta": meta} if result is None else {"result": result, "meta": meta}
    return httpx.Response(status, json=body)


def failure(
    status: int,
    *,
    message: str = "It went wrong",
    code: str = "Q_ERR",
    request_id: str = "req-1234",
    retry_after_body: float | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    error: dict = {"errorMessage": message, "errorCode": code}
    if retry_after_body is not None:
        error["retryAfter"] = retry_after_body
    meta = {"httpStatus": f"{status} - Error", "requestId": request_id, "error": error}
    return httpx.Response(status, json={"meta": meta}, headers=headers)


@pytest.fixture
def clock() -> RecordingClock:
    return RecordingClock()


@pytest.fixture
def api() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        yield router


@pytest.fixture
def client(clock: RecordingClock) -> Iterator[QualtricsClient]:
    with make_client(clock) as client:
        yield client


def make_client(clock: ManualClock, **kwargs) -> QualtricsClient:
    options = {"max_retries": 3, "rng": random.Random(7), **kwargs}
    return QualtricsClient(
        base_url=BASE, token=TOKEN, directory_id=DIRECTORY, clock=clock, **options
    )


# --- requests and envelopes ---


def test_whoami_sends_the_token_and_a_user_agent_and_returns_the_result(api, client):
    route = api.get("/whoami").mock(return_value=ok({"userId": "UR_1", "brandId": "acme"}))

    assert client.whoami() == {"userId": "UR_1", "brandId": "acme"}

    request = route.calls.last.request
    assert request.url == f"{BASE}/whoami"
    assert request.headers["X-API-TOKEN"] == TOKEN
    assert request.headers["User-Agent"].startswith("linkpool/")
    assert client.calls == {"GET /whoami": 1}


def test_check_access_reads_whoami_and_one_list_of_the_directory(api, client):
    meta = {"httpStatus": "200 - OK", "requestId": "r", "notice": "Request proxied."}
    me = {"userId": "UR_1", "brandId": "acme", "datacenter": "iad1"}
    api.get("/whoami").mock(return_value=httpx.Response(200, json={"result": me, "meta": meta}))
    lists = api.get(LISTS).mock(return_value=ok({"elements": [], "nextPage": None}))

    access = client.check_access()

    assert access == Access(
        user_id="UR_1", brand_id="acme", datacenter="iad1", notice=meta["notice"]
    )
    assert lists.calls.last.request.url.params["pageSize"] == "1"
    assert client.calls == {"GET /whoami": 1, "GET /directories/{directoryId}/mailinglists": 1}


def test_check_access_without_a_notice_or_brand(api, client):
    api.get("/whoami").mock(return_value=ok({"userId": "UR_1"}))
    api.get(LISTS).mock(return_value=ok({"elements": [], "nextPage": None}))

    assert client.check_access() == Access("UR_1", brand_id=None, datacenter=None, notice=None)


def test_check_access_fails_on_a_wrong_token_before_reading_the_directory(api, client):
    api.get("/whoami").mock(return_value=failure(401, code="AUTH_1.1"))
    lists = api.get(LISTS).mock(return_value=ok({"elements": [], "nextPage": None}))

    with pytest.raises(AuthError):
        client.check_access()
    assert not lists.called


def test_check_access_fails_on_a_wrong_directory(api, client):
    api.get("/whoami").mock(return_value=ok({"userId": "UR_1"}))
    api.get(LISTS).mock(return_value=failure(404, message="Directory not found"))

    with pytest.raises(NotFound) as caught:
        client.check_access()
    assert caught.value.endpoint == "/directories/{directoryId}/mailinglists"


def test_the_endpoint_table_keys_calls_as_the_client_counts_them(api, client):
    api.get(LISTS).mock(return_value=ok({"elements": [], "nextPage": None}))

    list(client.iter_mailing_lists())

    assert client.calls == {ENDPOINTS["list_mailing_lists"].key: 1}
    assert ENDPOINTS["update_contact"].idempotent and not ENDPOINTS["start_import"].idempotent
    assert all(str(endpoint) == endpoint.key for endpoint in ENDPOINTS.values())


def test_the_import_limits_are_the_documented_ones():
    assert (MAX_IMPORT_CONTACTS, MAX_IMPORT_BYTES) == (10_000, 5_000_000)


def test_create_mailing_list_posts_the_name_and_returns_the_id(api, client):
    route = api.post(LISTS).mock(return_value=ok({"id": "CG_New0001"}))

    assert client.create_mailing_list("linkpool-nps-0001") == "CG_New0001"
    assert json.loads(route.calls.last.request.content) == {"name": "linkpool-nps-0001"}
    assert client.calls == {"POST /directories/{directoryId}/mailinglists": 1}


@pytest.mark.parametrize("answered", ["CG_a,b", 'CG_"x"', "CG_a/../b", "CG_x\n", "", "x" * 101])
def test_a_created_id_that_is_not_an_id_is_refused_not_returned(api, client, answered):
    """Ids go into request paths and, unquoted, into the export's CSV: one that is not letters,
    digits, _ and - is a QualtricsError where it is read."""
    api.post(LISTS).mock(return_value=ok({"id": answered}))

    with pytest.raises(QualtricsError) as raised:
        client.create_mailing_list("linkpool-nps-0001")

    assert "result.id" in str(raised.value)
    assert answered == "" or answered not in str(raised.value)


def test_a_list_found_by_name_must_have_an_id_for_an_id(api, client):
    api.get(LISTS).mock(
        return_value=ok({"elements": [{"name": "wanted", "mailingListId": "CG_1,2"}]})
    )

    with pytest.raises(QualtricsError, match="mailingListId"):
        client.find_mailing_list("wanted")


def test_a_list_member_whose_contact_id_is_not_an_id_is_not_matched(api, client):
    members = [
        {"extRef": "good", "contactId": "CID_Good01"},
        {"extRef": "odd", "contactId": "CID_a,b"},
    ]
    api.get(f"{LISTS}/CG_1/contacts").mock(return_value=ok({"elements": members}))

    assert client.contact_ids_by_ext_ref("CG_1") == {"good": "CID_Good01"}


def test_ids_in_paths_are_quoted(api, client):
    route = api.get(f"{LISTS}/CG_odd%2Fid").mock(return_value=ok({"name": "x"}))

    client.get_mailing_list("CG_odd/id")

    assert route.called


def test_deletes_and_updates_accept_meta_only_and_empty_answers(api, client):
    api.delete(f"{LISTS}/{LIST_ID}").mock(return_value=ok())
    api.delete("/distributions/EMD_1").mock(return_value=httpx.Response(204))
    contact = api.put(f"{LISTS}/{LIST_ID}/contacts/CID_1").mock(return_value=ok())
    api.delete(f"{LISTS}/{LIST_ID}/contacts/CID_1").mock(return_value=ok())
    api.delete("/directories/POOL_TestDirectory01/contacts/CID_1").mock(return_value=ok())

    client.delete_mailing_list(LIST_ID)
    client.delete_distribution("EMD_1")
    client.update_contact(LIST_ID, "CID_1", {"embeddedData": {"linkpool_recipient": "r-1"}})
    client.delete_contact(LIST_ID, "CID_1")
    client.delete_directory_contact("CID_1")

    assert json.loads(contact.calls.last.request.content) == {
        "embeddedData": {"linkpool_recipient": "r-1"}
    }
    assert client.calls["DELETE /directories/{directoryId}/contacts/{contactId}"] == 1


def test_an_answer_without_a_result_is_an_error(api, client):
    api.get("/whoami").mock(return_value=ok())

    with pytest.raises(QualtricsError, match="without the expected result"):
        client.whoami()


def test_a_success_that_is_not_json_is_an_error(api, client):
    api.get("/whoami").mock(return_value=httpx.Response(200, text="<html>proxy</html>"))

    with pytest.raises(QualtricsError, match="not .*JSON|other than a JSON"):
        client.whoami()


def test_create_link_distribution_sends_exactly_the_documented_body(api, client):
    route = api.post("/distributions").mock(return_value=ok({"id": "EMD_New0001"}))
    paris = timezone(timedelta(hours=2))

    distribution_id = client.create_link_distribution(
        survey_id=SURVEY_ID,
        mailing_list_id=LIST_ID,
        description="linkpool nps 0001",
        expires_at=datetime(2027, 1, 31, 2, 30, tzinfo=paris),
    )

    assert distribution_id == "EMD_New0001"
    assert (
        json.loads(route.calls.last.request.content)
        == {
            "surveyId": SURVEY_ID,
            "linkType": "Individual",
            "description": "linkpool nps 0001",
            "action": "CreateDistribution",
            "expirationDate": "2027-01-31T00:30:00Z",  # ISO 8601 UTC: a naive time is read in the account zone
            "mailingListId": LIST_ID,
        }
    )


def test_start_import_returns_the_job_and_its_refused_indexes(api, client):
    route = api.post(f"{LISTS}/{LIST_ID}/transactioncontacts").mock(
        return_value=ok({"id": "PGR_1", "contacts": {"unprocessed": [2, 5]}}, status=202)
    )
    contacts = [{"extRef": f"lp-{i}"} for i in range(6)]

    job = client.start_import(LIST_ID, contacts)

    assert job == ImportJob(id="PGR_1", unprocessed=[2, 5])
    assert json.loads(route.calls.last.request.content) == {"contacts": contacts}


def import_status(percent: int, added: int = 0) -> httpx.Response:
    counts = {"added": added, "updated": 0, "failed": 1}
    return ok({"percentComplete": percent, "contacts": {"count": counts}})


def test_wait_for_import_polls_on_the_clock_until_complete(api, client, clock):
    api.get(f"{LISTS}/{LIST_ID}/transactioncontacts/PGR_1").mock(
        side_effect=[import_status(0), import_status(60), import_status(100, added=999)]
    )

    status = client.wait_for_import(LIST_ID, "PGR_1", poll_interval=2.0)

    assert status == ImportStatus(percent_complete=100, added=999, updated=0, failed=1)
    assert clock.sleeps == [2.0, 2.0]


def test_wait_for_import_gives_up_after_its_timeout_of_clock_time(api, client, clock):
    api.get(f"{LISTS}/{LIST_ID}/transactioncontacts/PGR_1").mock(return_value=import_status(40))
    started = clock.monotonic()

    with pytest.raises(QualtricsTimeout, match="still at 40% after 30s"):
        client.wait_for_import(LIST_ID, "PGR_1", poll_interval=7.0, timeout=30.0)

    assert clock.monotonic() - started == pytest.approx(30.0)


# --- pagination ---


def test_pagination_follows_next_page_verbatim_over_three_pages(api, client):
    page2 = f"{BASE}/distributions/EMD_1/links?surveyId={SURVEY_ID}&skipToken=a%2Bb%3D%3D"
    page3 = f"{BASE}/distributions/EMD_1/links?skipToken=zz-3&surveyId={SURVEY_ID}&pageSize=2"
    pages = {
        None: ok({"elements": [{"contactId": "CID_1"}, {"contactId": "CID_2"}], "nextPage": page2}),
        "a+b==": ok({"elements": [{"contactId": "CID_3"}], "nextPage": page3}),
        "zz-3": ok({"elements": [{"contactId": "CID_4"}], "nextPage": None}),
    }
    route = api.get("/distributions/EMD_1/links").mock(
        side_effect=lambda request: pages[request.url.params.get("skipToken")]
    )

    links = list(client.iter_links("EMD_1", SURVEY_ID))

    assert [link["contactId"] for link in links] == ["CID_1", "CID_2", "CID_3", "CID_4"]
    urls = [str(call.request.url) for call in route.calls]
    assert urls == [f"{BASE}/distributions/EMD_1/links?surveyId={SURVEY_ID}", page2, page3]
    assert client.calls == {"GET /distributions/{distributionId}/links": 3}


def test_iterators_page_lists_contacts_and_distributions(api, client):
    api.get(LISTS).mock(
        return_value=ok({"elements": [{"mailingListId": LIST_ID}], "nextPage": None})
    )
    api.get(f"{LISTS}/{LIST_ID}/contacts").mock(
        return_value=ok({"elements": [{"id": "CID_1"}], "nextPage": None})
    )
    distributions = api.get("/distributions", params={"surveyId": SURVEY_ID}).mock(
        return_value=ok({"elements": [{"id": "EMD_1"}], "nextPage": None})
    )

    assert [m["mailingListId"] for m in client.iter_mailing_lists()] == [LIST_ID]
    assert [c["id"] for c in client.iter_contacts(LIST_ID)] == ["CID_1"]
    assert [d["id"] for d in client.iter_distributions(SURVEY_ID)] == ["EMD_1"]
    assert distributions.called


@pytest.mark.parametrize(
    ("answer", "active"),
    [({"isActive": True}, True), ({"isActive": False}, False), ({}, None),
     ({"isActive": "true"}, None)],
    ids=["active", "inactive", "silent", "not-a-boolean"],
)  # fmt: skip
def test_a_surveys_activity_is_what_its_is_active_says_and_unknown_otherwise(
    api, client, answer: dict, active: bool | None
) -> None:
    api.get(f"/surveys/{SURVEY_ID}").mock(return_value=ok({"id": SURVEY_ID, **answer}))

    assert survey_active(client.get_survey(SURVEY_ID)) is active


def test_a_next_page_on_a_foreign_host_is_refused_without_sending_the_token(api, client):
    api.get(LISTS).mock(
        return_value=ok({"elements": [], "nextPage": "https://evil.example/steal?skipToken=1"})
    )

    with pytest.raises(QualtricsError, match="another host"):
        list(client.iter_mailing_lists())

    assert client.calls == {"GET /directories/{directoryId}/mailinglists": 1}


# --- typed errors ---


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (400, BadRequest),
        (401, AuthError),
        (403, AuthError),
        (404, NotFound),
        (409, BadRequest),
        (429, RateLimited),
        (500, ServerError),
        (503, ServerError),
    ],
)
def test_each_status_raises_its_typed_error_with_qualtrics_details(api, clock, status, error_type):
    api.get(f"{LISTS}/{LIST_ID}").mock(
        return_value=failure(status, message="Invalid id", code="GS_1", request_id="req-77")
    )

    with make_client(clock, max_retries=0) as client, pytest.raises(error_type) as caught:
        client.get_mailing_list(LIST_ID)

    error = caught.value
    assert (error.status_code, error.error_code, error.error_message, error.request_id) == (
        status,
        "GS_1",
        "Invalid id",
        "req-77",
    )
    assert error.method == "GET"
    assert error.endpoint == "/directories/{directoryId}/mailinglists/{mailingListId}"
    assert "req-77" in str(error) and "Invalid id" in str(error)


def test_a_delete_of_something_gone_raises_not_found(api, client):
    route = api.delete("/distributions/EMD_gone").mock(return_value=failure(404))

    with pytest.raises(NotFound):
        client.delete_distribution("EMD_gone")

    assert route.call_count == 1


def test_an_error_without_a_json_body_still_raises_its_type(api, client):
    api.get("/whoami").mock(return_value=httpx.Response(401, text="Unauthorized"))

    with pytest.raises(AuthError) as caught:
        client.whoami()

    assert caught.value.status_code == 401


# --- retries (GET / PUT / DELETE) ---


def test_a_get_is_retried_after_a_5xx_with_jittered_backoff(api, client, clock):
    route = api.get("/whoami").mock(side_effect=[failure(503), failure(502), ok({"userId": "U"})])

    assert client.whoami() == {"userId": "U"}

    assert route.call_count == 3
    assert client.calls == {"GET /whoami": 3}
    assert len(clock.sleeps) == 2
    assert 0 <= clock.sleeps[0] <= 0.5 and 0 <= clock.sleeps[1] <= 1.0


def test_backoff_is_capped_exponential_full_jitter_and_reproducible_with_a_seed(api):
    api.get("/whoami").mock(return_value=failure(500))

    def sleeps_with_seed(seed: int) -> list[float]:
        clock = RecordingClock()
        with make_client(clock, max_retries=5, rng=random.Random(seed)) as client:
            with pytest.raises(ServerError):
                client.whoami()
        return clock.sleeps

    sleeps = sleeps_with_seed(3)
    assert len(sleeps) == 5
    assert all(0 <= sleep <= 0.5 * 2**retry for retry, sleep in enumerate(sleeps))
    assert sleeps_with_seed(3) == sleeps
    assert sleeps_with_seed(4) != sleeps


def test_the_retry_budget_ends_in_the_typed_error(api, client):
    route = api.get("/whoami").mock(return_value=failure(429))

    with pytest.raises(RateLimited):
        client.whoami()

    assert route.call_count == 4  # the first attempt and max_retries=3 retries


def test_retry_after_in_seconds_is_honoured(api, client, clock):
    api.get("/whoami").mock(
        side_effect=[failure(429, headers={"Retry-After": "7"}), ok({"userId": "U"})]
    )

    client.whoami()

    assert clock.sleeps == [7.0]


def test_retry_after_as_an_http_date_is_relative_to_the_clock(api, client, clock):
    when = format_datetime(clock.now() + timedelta(seconds=30), usegmt=True)
    api.get("/whoami").mock(
        side_effect=[failure(503, headers={"Retry-After": when}), ok({"userId": "U"})]
    )

    client.whoami()

    assert clock.sleeps == [30.0]


def test_retry_after_in_the_error_envelope_is_honoured(api, client, clock):
    api.get("/whoami").mock(side_effect=[failure(429, retry_after_body=12), ok({"userId": "U"})])

    client.whoami()

    assert clock.sleeps == [12.0]


def test_a_retry_after_longer_than_we_wait_raises_at_once(api, client, clock):
    route = api.get("/whoami").mock(return_value=failure(429, headers={"Retry-After": "3600"}))

    with pytest.raises(RateLimited, match="wait 3600s"):
        client.whoami()

    assert route.call_count == 1
    assert clock.sleeps == []


def test_put_and_delete_are_retried_on_timeouts_and_connection_errors(api, client):
    put = api.put(f"{LISTS}/{LIST_ID}/contacts/CID_1").mock(
        side_effect=[httpx.ReadTimeout("slow"), ok()]
    )
    delete = api.delete(f"{LISTS}/{LIST_ID}").mock(
        side_effect=[httpx.ConnectError("refused"), httpx.RemoteProtocolError("eof"), ok()]
    )

    client.update_contact(LIST_ID, "CID_1", {"embeddedData": {"k": "v"}})
    client.delete_mailing_list(LIST_ID)

    assert (put.call_count, delete.call_count) == (2, 3)


@pytest.mark.parametrize(
    ("transport_error", "error_type"),
    [
        (httpx.ReadTimeout("slow"), QualtricsTimeout),
        (httpx.ConnectTimeout("slow"), QualtricsTimeout),
        (httpx.ConnectError("refused"), QualtricsUnreachable),
    ],
)
def test_a_get_that_never_gets_an_answer_raises_after_its_retries(
    api, client, transport_error, error_type
):
    route = api.get("/whoami").mock(side_effect=transport_error)

    with pytest.raises(error_type) as caught:
        client.whoami()

    assert route.call_count == 4
    assert (caught.value.method, caught.value.endpoint) == ("GET", "/whoami")


# --- POST: never retried blindly ---


@pytest.mark.parametrize(
    "answer",
    [failure(504), failure(500), httpx.ReadTimeout("slow"), httpx.RemoteProtocolError("eof")],
    ids=["504", "500", "read-timeout", "lost-connection"],
)
def test_a_post_without_a_clear_answer_raises_outcome_unknown_without_retrying(
    api, client, clock, answer
):
    route = api.post("/distributions").mock(side_effect=[answer, ok({"id": "EMD_2"})])

    with pytest.raises(OutcomeUnknown) as caught:
        client.create_link_distribution(
            survey_id=SURVEY_ID,
            mailing_list_id=LIST_ID,
            description="linkpool nps 0002",
            expires_at=datetime(2027, 1, 1, tzinfo=UTC),
        )

    assert route.call_count == 1
    assert clock.sleeps == []
    assert (caught.value.method, caught.value.endpoint) == ("POST", "/distributions")


def test_a_post_answered_429_was_not_processed_and_is_retried(api, client, clock):
    route = api.post(LISTS).mock(
        side_effect=[failure(429, headers={"Retry-After": "2"}), ok({"id": "CG_2"})]
    )

    assert client.create_mailing_list("linkpool-nps-0002") == "CG_2"
    assert route.call_count == 2
    assert clock.sleeps == [2.0]


def test_a_post_whose_connection_was_never_made_is_retried(api, client):
    route = api.post(LISTS).mock(side_effect=[httpx.ConnectError("refused"), ok({"id": "CG_3"})])

    assert client.create_mailing_list("linkpool-nps-0003") == "CG_3"
    assert route.call_count == 2


def test_a_post_refused_as_written_raises_bad_request_once(api, client):
    route = api.post(LISTS).mock(
        return_value=failure(400, message="Unexpected json key provided: nmae")
    )

    with pytest.raises(BadRequest, match="Unexpected json key"):
        client.create_mailing_list("x")

    assert route.call_count == 1


# --- throttle ---


def test_the_throttle_holds_the_rate_on_the_clock(api, clock):
    sent_at: list[float] = []

    def record(request: httpx.Request) -> httpx.Response:
        sent_at.append(clock.monotonic())
        return ok({"userId": "U"})

    api.get("/whoami").mock(side_effect=record)
    with make_client(clock, requests_per_minute=60) as client:
        for _ in range(120):
            client.whoami()

    # A full minute's budget at once, then one request a second as the bucket refills.
    assert sent_at[:60] == [0.0] * 60
    assert sent_at[60:] == pytest.approx([float(n) for n in range(1, 61)])
    assert clock.monotonic() == pytest.approx(60.0)


def test_requests_in_flight_never_exceed_max_concurrency(api, clock):
    max_concurrency = 3
    callers = 4 * max_concurrency
    in_flight = 0
    peak = 0
    lock = threading.Lock()
    arrived = threading.Semaphore(0)
    release = threading.Event()

    def hold_until_released(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
        arrived.release()
        release.wait(timeout=5)
        with lock:
            in_flight -= 1
        return ok({"userId": "U"})

    api.get("/whoami").mock(side_effect=hold_until_released)
    with make_client(clock, max_concurrency=max_concurrency, max_retries=0) as client:
        threads = [threading.Thread(target=client.whoami) for _ in range(callers)]
        for thread in threads:
            thread.start()
        assert all(arrived.acquire(timeout=5) for _ in range(max_concurrency))
        # The other callers are ready to go: none may get a request out while the slots are held.
        assert not arrived.acquire(timeout=0.2)
        release.set()
        for thread in threads:
            thread.join()

    assert peak == max_concurrency
    assert client.calls == {"GET /whoami": callers}


def test_tallies_count_each_threads_calls_apart(api, client):
    api.get("/whoami").mock(return_value=ok({"userId": "U"}))
    api.get(f"{LISTS}/{LIST_ID}").mock(return_value=ok({"mailingListId": LIST_ID}))
    both_inside = threading.Barrier(2, timeout=5)
    tallies: dict[str, Counter[str]] = {}

    def job(name: str, call: Callable[[], object], times: int) -> None:
        with client.tally() as calls:
            both_inside.wait()  # both blocks are open while either thread calls
            for _ in range(times):
                call()
            both_inside.wait()
        tallies[name] = calls

    with client.tally() as outside:
        threads = [
            threading.Thread(target=job, args=("a", client.whoami, 3)),
            threading.Thread(target=job, args=("b", lambda: client.get_mailing_list(LIST_ID), 2)),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        client.whoami()

    assert tallies == {
        "a": {"GET /whoami": 3},
        "b": {"GET /directories/{directoryId}/mailinglists/{mailingListId}": 2},
    }
    assert outside == {"GET /whoami": 1}
    assert client.calls == {
        "GET /whoami": 4,
        "GET /directories/{directoryId}/mailinglists/{mailingListId}": 2,
    }


def test_tallies_nest_count_retries_and_count_a_counter_once(api, client):
    api.get("/whoami").mock(side_effect=[failure(503), ok({"userId": "U"}), ok({"userId": "U"})])
    with client.tally() as outer:
        client.whoami()  # a 503, then the retry
        with client.tally() as inner, client.tally(outer):
            client.whoami()

    assert outer == {"GET /whoami": 3}
    assert inner == {"GET /whoami": 1}


# --- the token stays secret ---


def every_error(api: respx.MockRouter, client: QualtricsClient) -> list[QualtricsError]:
    """Provoke each kind of failure once and collect what was raised."""
    api.get("/whoami").mock(
        side_effect=[
            failure(400, message=f"bad token {TOKEN} in header"),
            failure(401),
            failure(404),
            *[failure(429)] * 4,
            *[failure(500)] * 4,
            *[httpx.ReadTimeout("slow")] * 4,
            *[httpx.ConnectError("refused")] * 4,
        ]
    )
    api.post(LISTS).mock(side_effect=[failure(504), httpx.ReadTimeout("slow")])
    calls = [client.whoami] * 7 + [lambda: client.create_mailing_list("x")] * 2
    errors: list[QualtricsError] = []
    for call in calls:
        with pytest.raises(QualtricsError) as caught:
            call()
        errors.append(caught.value)
    return errors


def test_the_token_appears_in_no_error_log_record_or_repr(api, client, caplog):
    caplog.set_level(logging.DEBUG)

    errors = every_error(api, client)

    kinds = {type(error) for error in errors}
    assert kinds == {
        BadRequest,
        AuthError,
        NotFound,
        RateLimited,
        ServerError,
        QualtricsTimeout,
        QualtricsUnreachable,
        OutcomeUnknown,
    }
    for error in errors:
        assert TOKEN not in str(error)
        assert TOKEN not in repr(error)
        assert TOKEN not in repr(error.args)
        assert TOKEN not in repr(vars(error))
    assert "[token]" in errors[0].error_message
    assert any(record.name == "linkpool.qualtrics" for record in caplog.records)
    for record in caplog.records:
        assert TOKEN not in record.getMessage()
    assert TOKEN not in repr(client)


def test_requests_are_logged_with_templated_endpoints_only(api, client, caplog):
    caplog.set_level(logging.DEBUG, logger="linkpool.qualtrics")
    api.get("/distributions/EMD_1/links").mock(return_value=ok({"elements": [], "nextPage": None}))

    list(client.iter_links("EMD_1", SURVEY_ID))

    messages = [r.getMessage() for r in caplog.records if r.name == "linkpool.qualtrics"]
    assert messages == ["GET /distributions/{distributionId}/links → 200 (attempt 1)"]


def test_from_settings_reads_the_token_from_the_environment(api, monkeypatch, clock):
    monkeypatch.setenv("LP_TEST_TOKEN", TOKEN)
    route = api.get("/whoami").mock(return_value=ok({"userId": "U"}))
    settings = QualtricsSettings(
        base_url=BASE, directory_id=DIRECTORY, api_token_env="LP_TEST_TOKEN"
    )

    with QualtricsClient.from_settings(settings, clock=clock) as client:
        client.whoami()

    assert route.calls.last.request.headers["X-API-TOKEN"] == TOKEN
    assert client.directory_id == DIRECTORY


def test_importing_the_client_does_not_load_the_simulator():
    probe = (
        "import linkpool, sys; import linkpool.qualtrics.client; import linkpool.cli; "
        "print(sorted(m for m in sys.modules if 'simulator' in m or m.startswith('wsgiref')))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    assert loaded.strip() == "[]"


def test_every_attempt_is_counted_by_endpoint_and_answer_and_retries_apart(api, client):
    api.get("/whoami").mock(
        side_effect=[
            failure(429, headers={"Retry-After": "1"}),
            httpx.ConnectError("refused"),
            ok({"userId": "U"}),
        ]
    )

    client.whoami()

    endpoint = next(iter(client.calls))
    assert client.outcomes == {
        (endpoint, "429"): 1,
        (endpoint, "ConnectError"): 1,
        (endpoint, "200"): 1,
    }
    assert client.retries == {endpoint: 2}
    assert client.calls[endpoint] == 3


# --- answers that never end, loop or do not decode (issue 11 points 7 and 10) ---------------


def test_a_next_page_that_repeats_fails_instead_of_looping(api, client):
    again = f"{BASE}{LISTS}?skipToken=same"
    api.get(LISTS).mock(
        return_value=ok({"elements": [{"mailingListId": LIST_ID}], "nextPage": again})
    )

    with pytest.raises(QualtricsError, match="nextPage repeated"):
        list(client.iter_mailing_lists())

    assert client.calls == {"GET /directories/{directoryId}/mailinglists": 2}


def test_a_next_page_cycle_over_two_pages_fails_too(api, client):
    first, second = f"{BASE}{LISTS}?skipToken=a", f"{BASE}{LISTS}?skipToken=b"
    pages = {None: first, "a": second, "b": first}
    api.get(LISTS).mock(
        side_effect=lambda request: ok(
            {"elements": [], "nextPage": pages[request.url.params.get("skipToken")]}
        )
    )

    with pytest.raises(QualtricsError, match="nextPage repeated"):
        list(client.iter_mailing_lists())


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_corrupt_content_encoding_is_a_qualtrics_error_not_a_traceback(
    api, client, method: str
) -> None:
    corrupt = httpx.Response(
        200,
        headers={"Content-Encoding": "gzip"},
        stream=httpx.ByteStream(b"this is not gzip at all"),
    )
    if method == "GET":
        api.get("/whoami").mock(return_value=corrupt)
        with pytest.raises(QualtricsError, match="could not be decoded"):
            client.whoami()
    else:
        api.post(LISTS).mock(return_value=corrupt)
        with pytest.raises(OutcomeUnknown):
            client.create_mailing_list("linkpool/nps/x")
