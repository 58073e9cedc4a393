"""The database stopped and started under a running ``linkpool serve`` (a subprocess): 503 with
the error body while it is down, then claims again once it is back, without a restart.

A private PostgreSQL server (see test_database_restart.py) so that stopping it disturbs no one.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from linkpool.db import create_engine, upgrade
from tests.acceptance.harness import PrivatePostgres, private_postgres_problem, wait_until
from tests.acceptance.test_serve import make_keys, serving, stock, write_config

problem = private_postgres_problem()
pytestmark = pytest.mark.skipif(problem is not None, reason=f"no private PostgreSQL: {problem}")


@pytest.fixture
def postgres() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres()
    try:
        server.start()
        engine = create_engine(server.url)
        upgrade(engine)
        engine.dispose()
        yield server
    finally:
        server.destroy()


def assert_database_error(answer: httpx.Response) -> None:
    assert answer.status_code == 503, answer.text
    error = answer.json()["error"]
    assert error["type"] == "DatabaseError"
    assert error["message"] and "\n" not in error["message"]
    assert "Traceback" not in answer.text


def test_the_service_answers_503_while_the_database_is_down_then_recovers(
    tmp_path: Path, postgres: PrivatePostgres
) -> None:
    config = write_config(tmp_path, postgres.url)
    keys = make_keys(postgres.url)
    stock(postgres.url, "nps", 20)
    auth = {"Authorization": f"Bearer {keys['admin']}"}
    urls: list[str] = []
    with serving(config, workers=1) as served, httpx.Client(base_url=served.base_url) as http:

        def claim(recipient: str) -> httpx.Response:
            return http.post("/v1/pools/nps/claims", json={"recipient": recipient}, headers=auth)

        before = [claim(f"before-{n}") for n in range(3)]
        assert [answer.status_code for answer in before] == [201, 201, 201]
        urls += [answer.json()["url"] for answer in before]

        postgres.stop()
        down = claim("while-down")
        assert_database_error(down)
        assert down.headers["Retry-After"] == "1"
        assert_database_error(http.get("/v1/pools", headers=auth))
        assert http.get("/readyz").status_code == 503
        assert http.get("/healthz").status_code == 200  # the process itself is fine
        assert "linkpool_database_up 0.0" in http.get("/metrics").text

        # Past the key cache's TTL the keys' reload fails too: still 503 DatabaseError (the
        # access log shows no key name then), never a 401 that would make clients drop the key.
        def refused_before_the_key_is_known() -> bool:
            assert_database_error(claim("while-down"))
            return "claims 503 " in served.log_text() and "key=- pool=nps" in served.log_text()

        wait_until(refused_before_the_key_is_known, what="the key cache to need the database")

        postgres.start()
        recovered = wait_until(
            lambda: (answer := claim("after")).status_code == 201 and answer,
            timeout=30,
            interval=0.2,
            what="a claim to succeed once the database is back",
        )
        urls.append(recovered.json()["url"])
        assert http.get("/readyz").status_code == 200
        assert [claim(f"after-{n}").status_code for n in range(3)] == [201, 201, 201]
        assert "linkpool_database_up 1.0" in http.get("/metrics").text
    assert served.process.returncode == 0
    log = served.log_text()
    assert "Traceback" not in log
    for secret in [*keys.values(), *urls]:
        assert secret not in log
    ids = [answer.json()["link_id"] for answer in before] + [recovered.json()["link_id"]]
    assert len(set(ids)) == len(ids)
