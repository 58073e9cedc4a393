"""The service's API through Starlette's TestClient: every status code it answers."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
from starlette.routing import Route

from linkpool.config import ServiceSettings
from linkpool.errors import DatabaseError
from linkpool.models import MAX_RECIPIENT_LENGTH
from linkpool.pool import MAX_DATA_BYTES
from linkpool.service.app import json_depth
from linkpool.service.keys import revoke_key
from linkpool.status import pools_report
from tests.unit.service_support import Harness, make_harness, svc_fixture  # noqa: F401

CLAIM_KEYS = {
    "url",
    "expires_at",
    "link_id",
    "pool",
    "recipient",
    "key",
    "data",
    "contact_id",
    "contact_lookup_id",
    "claimed_at",
    "replayed",
}


def error_of(response) -> dict:
    body = response.json()
    assert set(body) == {"error"}
    assert {"type", "message"} <= set(body["error"])
    assert "\n" not in body["error"]["message"]
    return body["error"]


# --- claims -------------------------------------------------------------------------------


def test_a_claim_answers_201_with_the_claim(svc: Harness) -> None:
    ids = svc.stock(2)
    response = svc.claim(body={"recipient": "cust-42", "data": {"store": "12"}}, key="txn-1")
    assert response.status_code == 201
    body = response.json()
    assert set(body) == CLAIM_KEYS
    assert body["link_id"] in ids
    assert (body["recipient"], body["key"], body["data"]) == ("cust-42", "txn-1", {"store": "12"})
    assert body["replayed"] is False


def test_a_repeat_of_a_key_answers_200_with_the_first_claim(svc: Harness) -> None:
    svc.stock(2)
    first = svc.claim(body={"recipient": "r", "data": {"a": 1}}, key="k1").json()
    again = svc.claim(body={"recipient": "r", "data": {"a": 1}}, key="k1")
    assert again.status_code == 200
    assert again.json() == {**first, "replayed": True}


def test_a_key_reused_with_other_data_is_409(svc: Harness) -> None:
    svc.stock(2)
    svc.claim(body={"recipient": "r", "data": {"a": 1}}, key="k1")
    response = svc.claim(body={"recipient": "r", "data": {"a": 2}}, key="k1")
    assert response.status_code == 409
    error = error_of(response)
    assert error["type"] == "IdempotencyConflict"
    assert (error["pool"], error["key"]) == ("nps", "k1")


def test_an_unknown_pool_is_404(svc: Harness) -> None:
    response = svc.claim(pool="nope")
    assert response.status_code == 404
    assert error_of(response)["type"] == "UnknownPool"


def test_an_exhausted_pool_is_503_with_retry_after(svc: Harness) -> None:
    response = svc.claim()
    assert response.status_code == 503
    assert response.headers["Retry-After"] == str(round(ServiceSettings().retry_after))
    error = error_of(response)
    assert (error["type"], error["pool"], error["too_old"]) == ("PoolExhausted", "nps", 0)


def test_an_unreachable_database_is_503_database_error(
    svc: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    def down(_request: object) -> None:
        raise DatabaseError("database error: connection refused; check [database] url")

    monkeypatch.setattr(svc.lp.store, "claim", down)
    response = svc.claim()
    assert response.status_code == 503
    assert error_of(response)["type"] == "DatabaseError"


# --- keys ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer lp_wrong"},
        {"Authorization": "Basic abc"},
        {"Authorization": "Bearer "},
    ],
)
def test_no_valid_key_is_401(svc: Harness, headers: dict[str, str]) -> None:
    response = svc.client.post("/v1/pools/nps/claims", json={"recipient": "r"}, headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert error_of(response)["type"] == "Unauthorized"


def test_a_key_scoped_to_another_pool_is_403(svc: Harness) -> None:
    svc.stock(1, pool="other")
    response = svc.claim(pool="other", api_key=svc.nps_key)
    assert response.status_code == 403
    assert error_of(response)["type"] == "Forbidden"
    assert svc.lp.counts("other").claimed == 0


def test_a_scoped_key_claims_from_its_pool(svc: Harness) -> None:
    svc.stock(1)
    assert svc.claim(api_key=svc.nps_key).status_code == 201


def test_a_revoked_key_is_refused_once_the_cache_expires(sqlite_url, clock, store, seed) -> None:
    for harness in make_harness(sqlite_url, clock, store, seed, ServiceSettings(key_cache_ttl=0)):
        harness.stock(2)
        assert harness.claim(api_key=harness.nps_key).status_code == 201
        revoke_key(harness.store, "nps-only", now=clock.now())
        assert harness.claim(api_key=harness.nps_key).status_code == 401


# --- bodies -------------------------------------------------------------------------------


def test_a_body_that_is_not_json_is_415(svc: Harness) -> None:
    headers = {**svc.auth(), "Content-Type": "text/plain"}
    response = svc.client.post("/v1/pools/nps/claims", content=b"recipient=r", headers=headers)
    assert response.status_code == 415
    headers["Content-Type"] = "application/json"
    response = svc.client.post("/v1/pools/nps/claims", content=b"{not json", headers=headers)
    assert response.status_code == 415
    assert error_of(response)["type"] == "UnsupportedMediaType"


def test_a_body_over_the_limit_is_413(svc: Harness) -> None:
    body = {"recipient": "r", "data": {"x": "a" * ServiceSettings().max_body_bytes}}
    response = svc.claim(body=body)
    assert response.status_code == 413
    assert error_of(response)["type"] == "PayloadTooLarge"


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ([1, 2], None, "JSON object"),
        ("text", None, "JSON object"),
        ({}, "recipient", "required"),
        ({"recipient": 7}, "recipient", "string"),
        ({"recipient": "r", "data": [1]}, "data", "JSON object"),
        ({"recipient": "r", "extra": 1}, "extra", "unknown field"),
        ({"recipient": "x" * (MAX_RECIPIENT_LENGTH + 1)}, "recipient", str(MAX_RECIPIENT_LENGTH)),
        ({"recipient": "r", "data": {"x": "a" * MAX_DATA_BYTES}}, "data", "64 KiB"),
    ],
)
def test_a_bad_body_is_422_naming_the_field_and_limit(
    svc: Harness, body: object, field: str | None, words: str
) -> None:
    svc.stock(1)
    response = svc.claim(body=body)
    assert response.status_code == 422
    error = error_of(response)
    assert error["type"] == "InvalidClaim"
    assert error["field"] == field
    assert words in error["message"]
    assert svc.lp.counts("nps").claimed == 0


def test_a_deeply_nested_body_is_422(svc: Harness) -> None:
    depth = ServiceSettings().max_json_depth
    for levels in (depth + 1, 100_000):
        text = '{"recipient": "r", "data": ' + '{"a": ' * levels + "1" + "}" * levels + "}"
        response = svc.client.post(
            "/v1/pools/nps/claims",
            content=text.encode(),
            headers={**svc.auth(), "Content-Type": "application/json"},
        )
        assert response.status_code in (413, 422), levels
        if response.status_code == 422:
            assert str(depth) in error_of(response)["message"]


def test_json_depth_counts_levels_of_containers() -> None:
    assert json_depth(1, 5) == 0
    assert json_depth({"a": 1}, 5) == 1
    assert json_depth({"a": [{"b": []}]}, 5) == 4
    assert json_depth([[[[[[[[1]]]]]]]], 3) == 4  # stops counting past the limit


def test_an_idempotency_key_over_the_limit_is_422(svc: Harness) -> None:
    response = svc.claim(key="k" * 256)
    assert response.status_code == 422
    assert error_of(response)["field"] == "Idempotency-Key"


# --- reads --------------------------------------------------------------------------------


def test_pools_is_the_status_document(svc: Harness) -> None:
    svc.stock(3)
    svc.claim()
    response = svc.client.get("/v1/pools", headers=svc.auth())
    assert response.status_code == 200
    assert response.json() == json.loads(
        json.dumps(
            {"pools": pools_report(svc.lp.pools, svc.lp.counts, responses=svc.lp.response_counts)}
        )
    )


def test_a_scoped_key_sees_only_its_pools(svc: Harness) -> None:
    response = svc.client.get("/v1/pools", headers=svc.auth(svc.nps_key))
    assert set(response.json()["pools"]) == {"nps"}


def test_one_pool(svc: Harness) -> None:
    svc.stock(3)
    response = svc.client.get("/v1/pools/nps", headers=svc.auth())
    assert response.status_code == 200
    assert response.json()["pool"] == "nps"
    assert response.json()["claimable"] == 3
    assert svc.client.get("/v1/pools/nope", headers=svc.auth()).status_code == 404
    assert svc.client.get("/v1/pools/other", headers=svc.auth(svc.nps_key)).status_code == 403


def test_a_claim_is_found_by_its_key(svc: Harness) -> None:
    svc.stock(1)
    made = svc.claim(key="txn/7").json()
    found = svc.client.get("/v1/pools/nps/claims/txn/7", headers=svc.auth())
    assert found.status_code == 200
    assert found.json() == {**made, "replayed": True}
    missing = svc.client.get("/v1/pools/nps/claims/never", headers=svc.auth())
    assert missing.status_code == 404
    assert error_of(missing)["type"] == "ClaimNotFound"


def test_health_and_readiness(svc: Harness) -> None:
    assert svc.client.get("/healthz").json() == {"status": "ok"}
    assert svc.client.get("/readyz").status_code == 200


def test_readiness_fails_on_an_unmigrated_database(tmp_path, clock) -> None:
    from starlette.testclient import TestClient

    from linkpool.pool import LinkPool
    from linkpool.service.app import create_app

    lp = LinkPool(database_url=f"sqlite:///{tmp_path / 'empty.db'}", pools=[], check_schema=False)
    with TestClient(create_app(lp)) as client:
        response = client.get("/readyz")
    lp.close()
    assert response.status_code == 503
    assert error_of(response)["type"] == "SchemaNotMigrated"


def test_an_unknown_route_is_a_json_404(svc: Harness) -> None:
    response = svc.client.get("/v2/nothing")
    assert response.status_code == 404
    assert error_of(response)["type"] == "NotFound"


# --- openapi, metrics, log ----------------------------------------------------------------


def test_openapi_describes_exactly_the_routes(svc: Harness) -> None:
    document = svc.client.get("/openapi.json").json()
    assert document["openapi"].startswith("3.")
    documented = {
        (path, method.upper()) for path, ops in document["paths"].items() for method in ops
    }
    served = set()
    for route in svc.client.app.routes:  # type: ignore[attr-defined]
        assert isinstance(route, Route)
        path = route.path.replace("{key:path}", "{key}")
        served |= {(path, method) for method in route.methods or () if method != "HEAD"}
    assert documented == served


def test_openapi_lists_every_status_the_claim_answers(svc: Harness) -> None:
    document = svc.client.get("/openapi.json").json()
    statuses = set(document["paths"]["/v1/pools/{pool}/claims"]["post"]["responses"])
    assert statuses == {"200", "201", "401", "403", "404", "409", "413", "415", "422", "503"}


def test_metrics_show_pool_gauges_and_claim_outcomes(svc: Harness) -> None:
    svc.stock(1)
    svc.claim()
    svc.claim()  # exhausted
    text = svc.client.get("/metrics").text
    assert 'linkpool_pool_claimable{pool="nps"} 0.0' in text
    assert 'linkpool_pool_claimed{pool="nps"} 1.0' in text
    assert 'linkpool_pool_live_lists{pool="nps"} 1.0' in text
    assert 'linkpool_claims_total{outcome="ok",pool="nps"} 1.0' in text
    assert 'linkpool_claims_total{outcome="exhausted",pool="nps"} 1.0' in text
    assert 'linkpool_claim_duration_seconds_count{pool="nps"} 2.0' in text
    assert "linkpool_database_up 1.0" in text


def test_the_access_log_names_key_pool_and_link_but_no_secret(
    svc: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    svc.stock(1)
    with caplog.at_level(logging.INFO, logger="linkpool.service.access"):
        claim = svc.claim(key="txn-9").json()
        svc.claim(api_key="lp_not-a-real-key")
    lines = [record.getMessage() for record in caplog.records]
    assert any(f"key=admin pool=nps link={claim['link_id']}" in line for line in lines)
    assert any("201" in line for line in lines) and any("401" in line for line in lines)
    text = "\n".join(lines)
    for secret in (claim["url"], svc.admin_key, "lp_not-a-real-key"):
        assert secret not in text


def test_a_worker_frees_the_pool_a_reconnect_replaced(tmp_path, sqlite_url, monkeypatch) -> None:
    """A worker freezes its start-up objects out of the garbage collector. The engine's pool must
    not be among them: after a disconnect the claim disposes the pool, and the old one, a cycle
    with its connection records, is freed only by the collector (on PostgreSQL its connections
    would stay open for good)."""
    import gc
    import weakref

    from linkpool.config import CONFIG_ENV
    from linkpool.service.app import app_from_environment

    config = tmp_path / "linkpool.toml"
    config.write_text(
        f'[database]\nurl = "{sqlite_url}"\n[pools.nps]\nsurvey_id = "SV_0123456789abcde"\n',
        encoding="utf-8",
    )
    monkeypatch.setenv(CONFIG_ENV, str(config))
    app = app_from_environment()
    try:
        engine = app.state.service.lp.engine
        in_use = engine.raw_connection()  # another thread's, when the claim disposes the pool
        replaced = weakref.ref(engine.pool)
        engine.dispose()
        in_use.close()  # back into the replaced pool
        del in_use
        gc.collect()
        assert replaced() is None
    finally:
        gc.unfreeze()
        asyncio.run(app.state.service.stop())
        app.state.service.lp.close()
