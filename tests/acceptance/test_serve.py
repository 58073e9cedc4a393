"""`linkpool serve` as a real subprocess on loopback, through a real HTTP client."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from linkpool.clock import SystemClock
from linkpool.db import create_engine
from linkpool.service.keys import create_key, revoke_key
from linkpool.store import Store
from tests.acceptance.harness import LINKPOOL, free_port, linkpool_env, stop, stop_all, wait_until
from tests.conftest import SURVEY_ID, seed_links

KEY_TTL = 1


def write_config(tmp_path: Path, database_url: str) -> Path:
    path = tmp_path / "linkpool.toml"
    pools = "".join(f'[pools.{name}]\nsurvey_id = "{SURVEY_ID}"\n' for name in ("nps", "other"))
    path.write_text(
        f'[database]\nurl = "{database_url}"\n\n{pools}\n'
        f'[service]\nkey_cache_ttl = "{KEY_TTL}s"\nretry_after = "7s"\nmax_body_bytes = 4096\n',
        encoding="utf-8",
    )
    return path


class Served:
    def __init__(self, process: subprocess.Popen[str], base_url: str, log: Path) -> None:
        self.process, self.base_url, self.log = process, base_url, log

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8")


@contextmanager
def serving(config: Path, *, workers: int) -> Iterator[Served]:
    port = free_port()
    log = config.with_name(f"serve-{port}.log")
    with log.open("w") as handle:
        process = subprocess.Popen(
            [LINKPOOL, "--config", str(config), "serve", "--port", str(port)]
            + ["--workers", str(workers)],
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=linkpool_env(),
            text=True,
        )
    served = Served(process, f"http://127.0.0.1:{port}", log)
    try:
        wait_until_ready(served)
        yield served
    finally:
        stop(process, timeout=30)


def wait_until_ready(served: Served) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert served.process.poll() is None, served.log_text()
        try:
            if httpx.get(served.base_url + "/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("the service did not become ready:\n" + served.log_text())


def stock(database_url: str, pool: str, count: int) -> None:
    engine = create_engine(database_url)
    now = SystemClock().now()
    seed_links(Store(engine), pool, count, now=now, expires_at=now + timedelta(days=30))
    engine.dispose()


def make_keys(database_url: str) -> dict[str, str]:
    engine = create_engine(database_url)
    keys = Store(engine)
    now = SystemClock().now()
    made = {
        "admin": create_key(keys, "admin", None, now=now)[1],
        "nps-only": create_key(keys, "nps-only", ["nps"], now=now)[1],
        "doomed": create_key(keys, "doomed", None, now=now)[1],
    }
    engine.dispose()
    return made


def revoke(database_url: str, name: str) -> None:
    engine = create_engine(database_url)
    revoke_key(Store(engine), name, now=SystemClock().now())
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(request.getfixturevalue("sqlite_url"))
    request.getfixturevalue("pg_engine")  # emptied for this test
    return str(request.getfixturevalue("postgres_url"))


def test_every_status_code_against_a_real_server(tmp_path: Path, database_url: str) -> None:
    config = write_config(tmp_path, database_url)
    keys = make_keys(database_url)
    stock(database_url, "nps", 2)
    stock(database_url, "other", 1)
    urls: list[str] = []
    with serving(config, workers=2) as served, httpx.Client(base_url=served.base_url) as http:
        auth = {"Authorization": f"Bearer {keys['admin']}"}

        def claim(body: object, **headers: str) -> httpx.Response:
            return http.post("/v1/pools/nps/claims", json=body, headers={**auth, **headers})

        first = claim({"recipient": "r1", "data": {"a": 1}}, **{"Idempotency-Key": "t1"})
        assert first.status_code == 201
        urls.append(first.json()["url"])
        again = claim({"recipient": "r1", "data": {"a": 1}}, **{"Idempotency-Key": "t1"})
        assert (again.status_code, again.json()["replayed"]) == (200, True)
        assert claim({"recipient": "r2"}, **{"Idempotency-Key": "t1"}).status_code == 409
        found = http.get("/v1/pools/nps/claims/t1", headers=auth)
        assert found.json()["link_id"] == first.json()["link_id"]
        assert http.get("/v1/pools/nps/claims/t9", headers=auth).status_code == 404
        assert (
            http.post("/v1/pools/nope/claims", json={"recipient": "r"}, headers=auth).status_code
            == 404
        )
        scoped = {"Authorization": f"Bearer {keys['nps-only']}"}
        assert (
            http.post("/v1/pools/other/claims", json={"recipient": "r"}, headers=scoped).status_code
            == 403
        )
        assert http.post("/v1/pools/nps/claims", json={"recipient": "r"}).status_code == 401
        plain = {**auth, "Content-Type": "text/plain"}
        assert http.post("/v1/pools/nps/claims", content=b"hello", headers=plain).status_code == 415
        assert claim({"recipient": "r", "data": {"x": "a" * 5000}}).status_code == 413
        assert claim([1, 2]).status_code == 422
        nested = '{"recipient": "r", "data": ' + '{"a": ' * 60 + "1" + "}" * 60 + "}"
        deep = http.post(
            "/v1/pools/nps/claims",
            content=nested.encode(),
            headers={**auth, "Content-Type": "application/json"},
        )
        assert deep.status_code == 422
        second = claim({"recipient": "r3"})
        assert second.status_code == 201
        urls.append(second.json()["url"])
        exhausted = claim({"recipient": "r4"})
        assert exhausted.status_code == 503
        assert exhausted.headers["Retry-After"] == "7"
        assert exhausted.json()["error"]["type"] == "PoolExhausted"
        pools = http.get("/v1/pools", headers=auth).json()["pools"]
        assert pools["nps"]["claimed"] == 2 and pools["other"]["claimable"] == 1
        assert "linkpool_claims_total" in http.get("/metrics").text

        doomed = {"Authorization": f"Bearer {keys['doomed']}"}
        assert http.get("/v1/pools", headers=doomed).status_code == 200
        revoke(database_url, "doomed")

        def refused_everywhere() -> bool:
            # New connections each time, so that both workers answer some of these.
            answers = [httpx.get(served.base_url + "/v1/pools", headers=doomed) for _ in range(12)]
            return all(answer.status_code == 401 for answer in answers)

        # Within seconds, by the key cache's TTL: no restart, no request to any worker.
        wait_until(refused_everywhere, timeout=30, interval=0.2, what="the revoked key refused")
    assert served.process.returncode == 0
    log = served.log_text()
    assert "key=admin pool=nps link=" in log
    for secret in [*keys.values(), *urls]:
        assert secret not in log


def test_eight_client_processes_over_http_never_share_a_link(
    tmp_path: Path, postgres_url: str, pg_engine
) -> None:
    links, shared = 400, 5
    config = write_config(tmp_path, postgres_url)
    keys = make_keys(postgres_url)
    stock(postgres_url, "nps", links)
    with serving(config, workers=2) as served:
        outputs = [tmp_path / f"client-{n}.jsonl" for n in range(8)]
        clients = [
            subprocess.Popen(
                [sys.executable, "-m", "tests.acceptance.http_claimer", served.base_url]
                + [keys["admin"], "nps", str(n), str(shared), str(output)]
            )
            for n, output in enumerate(outputs)
        ]
        try:
            codes = [client.wait(timeout=120) for client in clients]
        finally:
            stop_all(clients)
        assert codes == [0] * 8
    answers = [json.loads(line) for output in outputs for line in output.read_text().splitlines()]
    fresh = [a["link_id"] for a in answers if not a["replayed"]]
    assert len(fresh) == len(set(fresh)) == links  # every link once, none twice
    by_shared_key: dict[str, set[int]] = {}
    for answer in answers:
        if answer["key"].startswith("shared-"):
            by_shared_key.setdefault(answer["key"], set()).add(answer["link_id"])
    assert len(by_shared_key) == shared
    assert all(len(ids) == 1 for ids in by_shared_key.values())


def test_sigterm_finishes_requests_in_flight_then_exits_0(
    tmp_path: Path, postgres_url: str, pg_engine
) -> None:
    config = write_config(tmp_path, postgres_url)
    keys = make_keys(postgres_url)
    stock(postgres_url, "nps", 5000)
    answered: list[int] = []
    broken: list[str] = []
    stopping = threading.Event()
    with serving(config, workers=1) as served:

        def claim_until_stopped(worker: int) -> None:
            with httpx.Client(base_url=served.base_url) as http:
                n = 0
                while not stopping.is_set():
                    try:
                        response = http.post(
                            "/v1/pools/nps/claims",
                            json={"recipient": f"{worker}-{n}"},
                            headers={"Authorization": f"Bearer {keys['admin']}"},
                        )
                        answered.append(response.status_code)
                    except httpx.ConnectError:
                        return  # after shutdown: refused, never half-answered
                    except httpx.TransportError as exc:
                        broken.append(type(exc).__name__)
                        return
                    n += 1

        threads = [threading.Thread(target=claim_until_stopped, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        time.sleep(1.0)
        served.process.send_signal(signal.SIGTERM)
        assert served.process.wait(timeout=30) == 0
        stopping.set()
        for thread in threads:
            thread.join(timeout=30)
    assert answered and set(answered) == {201}
    # A keep-alive connection closed by the server between requests can fail the next send.
    assert len(broken) <= len(threads)
    engine = create_engine(postgres_url)
    claimed = Store(engine).counts("nps", SystemClock().now(), timedelta(0)).claimed
    engine.dispose()
    assert claimed == len(answered)
