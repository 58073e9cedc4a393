"""RemotePool: LinkPool's claim protocol over HTTP, its exceptions, and when it retries."""

from __future__ import annotations

from dataclasses import replace

import httpx
import pytest

from linkpool.claimer import Claim
from linkpool.errors import IdempotencyConflict, InvalidClaim, PoolExhausted, UnknownPool
from linkpool.remote import KeyRefused, RemotePool, ServiceUnreachable
from tests.unit.service_support import Harness, svc_fixture  # noqa: F401


def remote(svc: Harness, key: str | None = None) -> RemotePool:
    """A RemotePool whose requests go to the app under test."""

    def forward(request: httpx.Request) -> httpx.Response:
        answer = svc.client.request(
            request.method, request.url.path, headers=dict(request.headers), content=request.content
        )
        return httpx.Response(answer.status_code, headers=answer.headers, content=answer.content)

    return RemotePool(
        "http://service", api_key=key or svc.admin_key, transport=httpx.MockTransport(forward)
    )


def test_remote_claims_are_the_claims_linkpool_makes(svc: Harness) -> None:
    svc.stock(2)
    with remote(svc) as pool:
        claim = pool.claim("nps", recipient="cust-1", key="t1", data={"a": 1})
        assert isinstance(claim, Claim)
        looked_up = replace(claim, replayed=True)  # a lookup returns the first claim, replayed
        assert svc.lp.claim_by_key("nps", "t1") == looked_up
        assert pool.claim("nps", recipient="cust-1", key="t1", data={"a": 1}) == looked_up
        assert pool.claim_by_key("nps", "t1") == looked_up
        assert pool.claim_by_key("nps", "never") is None
        assert pool.counts("nps") == svc.lp.counts("nps")


def test_remote_raises_linkpools_exceptions(svc: Harness) -> None:
    svc.stock(1)
    with remote(svc) as pool:
        pool.claim("nps", recipient="r", key="k")
        with pytest.raises(IdempotencyConflict) as conflict:
            pool.claim("nps", recipient="someone else", key="k")
        assert (conflict.value.pool, conflict.value.key) == ("nps", "k")
        with pytest.raises(PoolExhausted) as exhausted:
            pool.claim("nps", recipient="r2")
        assert str(exhausted.value) == str(PoolExhausted("nps"))
        with pytest.raises(UnknownPool):
            pool.claim("nope", recipient="r")
        with pytest.raises(InvalidClaim, match="255"):
            pool.claim("nps", recipient="x" * 300)
    with remote(svc, svc.nps_key) as scoped, pytest.raises(KeyRefused):
        scoped.claim("other", recipient="r")
    with remote(svc, "lp_wrong") as wrong, pytest.raises(KeyRefused):
        wrong.counts("nps")


def flaky(failures: int, calls: list[httpx.Request]) -> httpx.MockTransport:
    """Fails to connect ``failures`` times, then answers an exhausted pool."""

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) <= failures:
            raise httpx.ConnectError("connection refused", request=request)
        error = {"type": "PoolExhausted", "message": "m", "pool": "nps", "too_old": 0}
        return httpx.Response(503, json={"error": error})

    return httpx.MockTransport(handler)


def test_a_claim_with_a_key_is_retried_after_a_connection_failure() -> None:
    calls: list[httpx.Request] = []
    pool = RemotePool("http://s", api_key="lp_x", transport=flaky(2, calls), sleep=lambda _: None)
    with pytest.raises(PoolExhausted):
        pool.claim("nps", recipient="r", key="k")
    assert len(calls) == 3
    assert {request.headers["Idempotency-Key"] for request in calls} == {"k"}


def test_a_claim_without_a_key_is_never_retried() -> None:
    calls: list[httpx.Request] = []
    pool = RemotePool("http://s", api_key="lp_x", transport=flaky(1, calls), sleep=lambda _: None)
    with pytest.raises(ServiceUnreachable, match="not retried"):
        pool.claim("nps", recipient="r")
    assert len(calls) == 1


def test_retries_stop_after_the_budget() -> None:
    calls: list[httpx.Request] = []
    pool = RemotePool(
        "http://s", api_key="lp_x", retries=2, transport=flaky(10, calls), sleep=lambda _: None
    )
    with pytest.raises(ServiceUnreachable):
        pool.claim("nps", recipient="r", key="k")
    assert len(calls) == 3


def test_the_api_key_is_sent_as_a_bearer_token_and_never_in_an_error() -> None:
    calls: list[httpx.Request] = []
    pool = RemotePool(
        "http://s", api_key="lp_secret", transport=flaky(9, calls), sleep=lambda _: None
    )
    with pytest.raises(ServiceUnreachable) as failure:
        pool.claim("nps", recipient="r", key="k")
    assert calls[0].headers["Authorization"] == "Bearer lp_secret"
    assert "lp_secret" not in str(failure.value)


def test_remote_pool_is_a_claimer_in_the_public_surface() -> None:
    import linkpool

    with linkpool.RemotePool("http://127.0.0.1:9", api_key="lp_x") as pool:
        assert isinstance(pool, linkpool.Claimer)
