"""Client and simulator agree: the same scenarios, driven through QualtricsClient."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest

from linkpool.clock import ManualClock
from linkpool.errors import AuthError, BadRequest, NotFound, OutcomeUnknown, ServerError
from linkpool.qualtrics import QualtricsClient
from linkpool.simulator import Simulator

SURVEY = "SV_SimSurvey0001"


@pytest.fixture
def sim(clock: ManualClock) -> Simulator:
    return Simulator(clock=clock, links_page_size=7, seed=3)


@pytest.fixture
def client(sim: Simulator) -> Iterator[QualtricsClient]:
    with sim.client() as client:
        yield client


def provision(
    client: QualtricsClient, clock: ManualClock, size: int = 5, name: str = "linkpool/contract/1"
) -> tuple[str, str]:
    """What refill does: a list, an import of placeholders, a distribution. Returns their ids."""
    mailing_list_id = client.create_mailing_list(name)
    contacts = [{"extRef": f"{name}#{n}", "embeddedData": {"slot": str(n)}} for n in range(size)]
    job = client.start_import(mailing_list_id, contacts)
    status = client.wait_for_import(mailing_list_id, job.id)
    assert (status.added, status.updated, status.failed) == (size, 0, 0)
    distribution_id = client.create_link_distribution(
        survey_id=SURVEY,
        mailing_list_id=mailing_list_id,
        description=name,
        expires_at=clock.now() + timedelta(days=30),
    )
    return mailing_list_id, distribution_id


def test_refill_calls_round_trip(sim: Simulator, client: QualtricsClient, clock: ManualClock):
    mailing_list_id, distribution_id = provision(client, clock, size=20)
    links = list(client.iter_links(distribution_id, SURVEY))
    assert sorted(link["link"] for link in links) == sorted(sim.links(distribution_id))
    assert all(sim.open_link(link["link"]).ok for link in links)
    assert [c["extRef"] for c in client.iter_contacts(mailing_list_id)] == [
        f"linkpool/contract/1#{n}" for n in range(20)
    ]
    assert [m["mailingListId"] for m in client.iter_mailing_lists()] == [mailing_list_id]
    assert client.get_mailing_list(mailing_list_id)["name"] == "linkpool/contract/1"
    (listed,) = client.iter_distributions(SURVEY)
    assert listed["description"] == "linkpool/contract/1"
    assert listed["recipients"]["mailingListId"] == mailing_list_id
    assert client.get_distribution(distribution_id)["id"] == distribution_id
    assert client.calls == sim.calls
    assert client.calls["GET /distributions/{distributionId}/links"] == 3
    assert (
        client.calls[
            "GET /directories/{directoryId}/mailinglists/{mailingListId}/transactioncontacts/{importId}"
        ]
        == sim.import_polls
    )


def test_the_expiration_the_client_sends_is_the_one_stored(
    sim: Simulator, client: QualtricsClient, clock: ManualClock
) -> None:
    _, distribution_id = provision(client, clock)
    stored = sim.distributions()[distribution_id]["expirationDate"]
    assert stored == (clock.now() + timedelta(days=30)).replace(microsecond=0)


def test_write_back_reaches_the_response(
    sim: Simulator, client: QualtricsClient, clock: ManualClock
) -> None:
    mailing_list_id, distribution_id = provision(client, clock, size=1)
    (link,) = client.iter_links(distribution_id, SURVEY)
    contact_id = client.contact_ids_by_ext_ref(mailing_list_id)[link["externalDataReference"]]
    client.update_contact(mailing_list_id, contact_id, {"embeddedData": {"r": "cust-42"}})
    assert sim.respond(link["link"]).ok
    assert sim.responses()[0].embedded_data == {"slot": "0", "r": "cust-42"}


def test_a_wrong_token_is_an_auth_error(sim: Simulator) -> None:
    with sim.client(token="wrong-token") as client, pytest.raises(AuthError) as caught:
        client.whoami()
    assert caught.value.status_code == 401
    assert "wrong-token" not in str(caught.value)


def test_a_wrong_directory_is_not_found(sim: Simulator) -> None:
    with sim.client(directory_id="POOL_OtherDirectory1") as client, pytest.raises(NotFound):
        client.create_mailing_list("x")


def test_strictness_errors_are_bad_requests_with_their_details(
    sim: Simulator, client: QualtricsClient, clock: ManualClock
) -> None:
    empty = client.create_mailing_list("empty")
    with pytest.raises(BadRequest) as caught:
        client.create_link_distribution(
            survey_id=SURVEY,
            mailing_list_id=empty,
            description="d",
            expires_at=clock.now() + timedelta(days=1),
        )
    assert "no contacts" in (caught.value.error_message or "")
    assert caught.value.error_code and caught.value.request_id
    with pytest.raises(BadRequest, match="Null value"):
        client.start_import(empty, [{"extRef": "a", "email": None}])
    with pytest.raises(BadRequest, match="Unexpected json key"):
        client.start_import(empty, [{"nickname": "b"}])
    with pytest.raises(BadRequest, match="10000"):
        client.start_import(empty, [{}] * 10_001)


def test_an_inactive_survey_is_refused(
    sim: Simulator, client: QualtricsClient, clock: ManualClock
) -> None:
    sim.set_survey_active(SURVEY, False)
    with pytest.raises(BadRequest, match="not active"):
        provision(client, clock)


def test_deleting_twice_is_not_found(
    sim: Simulator, client: QualtricsClient, clock: ManualClock
) -> None:
    mailing_list_id, distribution_id = provision(client, clock, size=2)
    contact_id = sim.mailing_lists()[mailing_list_id]["contacts"][0]
    client.delete_contact(mailing_list_id, contact_id)
    client.delete_directory_contact(contact_id)
    client.delete_distribution(distribution_id)
    client.delete_mailing_list(mailing_list_id)
    for delete in (
        lambda: client.delete_contact(mailing_list_id, contact_id),
        lambda: client.delete_directory_contact(contact_id),
        lambda: client.delete_distribution(distribution_id),
        lambda: client.delete_mailing_list(mailing_list_id),
    ):
        with pytest.raises(NotFound):
            delete()


def test_deletion_and_expiry_break_links(
    sim: Simulator, client: QualtricsClient, clock: ManualClock
) -> None:
    first_list, first = provision(client, clock, size=2)
    _, second = provision(client, clock, size=2, name="linkpool/contract/2")
    client.delete_distribution(first)
    client.delete_mailing_list(first_list)
    assert {sim.open_link(url).reason for url in sim.links(first)} == {"distribution deleted"}
    assert all(sim.open_link(url).ok for url in sim.links(second))
    clock.advance(timedelta(days=30))
    assert {sim.open_link(url).reason for url in sim.links(second)} == {"expired"}


def test_the_client_rides_out_the_rate_limit(
    sim: Simulator, client: QualtricsClient, clock: ManualClock
) -> None:
    sim.faults.rate_limit_per_minute = 3
    started = clock.now()
    for _ in range(6):
        client.whoami()
    assert sim.calls["GET /whoami"] > 6
    assert clock.now() - started >= timedelta(seconds=40)


def test_the_client_retries_reads_through_random_errors(
    sim: Simulator, client: QualtricsClient, clock: ManualClock
) -> None:
    _, distribution_id = provision(client, clock, size=30)
    sim.faults.error_rate = 0.3
    assert len(list(client.iter_links(distribution_id, SURVEY))) == 30
    assert sim.calls["GET /distributions/{distributionId}/links"] > 5


def test_a_failed_post_is_not_retried(sim: Simulator, client: QualtricsClient) -> None:
    sim.faults.error_rate = 1.0
    with pytest.raises(OutcomeUnknown):
        client.create_mailing_list("linkpool/lost/1")
    assert sim.calls["POST /directories/{directoryId}/mailinglists"] == 1
    assert sim.mailing_lists() == {}


def test_a_lost_post_can_be_found_by_its_name(sim: Simulator, client: QualtricsClient) -> None:
    sim.faults.lost_response_rate = 1.0
    with pytest.raises(OutcomeUnknown) as caught:
        client.create_mailing_list("linkpool/lost/1")
    assert caught.value.status_code == 504
    sim.faults.lost_response_rate = 0.0
    (found,) = [m for m in client.iter_mailing_lists() if m["name"] == "linkpool/lost/1"]
    assert found["mailingListId"] in sim.mailing_lists()


def test_reads_give_up_with_a_server_error(sim: Simulator, clock: ManualClock) -> None:
    sim.faults.error_rate = 1.0
    with sim.client(max_retries=2) as client, pytest.raises(ServerError):
        client.whoami()
    assert sim.calls["GET /whoami"] == 3


def test_lagging_links_show_up_on_a_later_read(
    sim: Simulator, client: QualtricsClient, clock: ManualClock
) -> None:
    sim.faults.link_lag = timedelta(minutes=5)
    sim.faults.link_lag_fraction = 0.2
    _, distribution_id = provision(client, clock, size=50)
    assert len(list(client.iter_links(distribution_id, SURVEY))) < 50
    clock.advance(timedelta(minutes=5))
    assert len(list(client.iter_links(distribution_id, SURVEY))) == 50
