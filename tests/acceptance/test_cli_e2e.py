"""The whole CLI as users run it: separate processes, a served simulator, a fresh database."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.acceptance.harness import (
    DIRECTORY_ID,
    Pool,
    SimulatorProcess,
    describe,
    run_cli,
    run_json,
    simulator_process,
    write_config,
)

POOL = Pool("checkin", target_available=120, low_water=100, list_size=50)
CLAIMS: list[tuple[str, str | None, dict[str, Any] | None]] = [
    ("cust-1", "txn-1", {"store": "12"}),
    ("cust-2", "txn-2", {"store": "7", "amount": 19.5}),
    ("cust-3", None, None),
]


@pytest.fixture
def served() -> Iterator[SimulatorProcess]:
    with simulator_process() as simulator:
        yield simulator  # a linkpool simulator subprocess


@pytest.fixture
def config(tmp_path: Path, served: SimulatorProcess) -> Path:
    return write_config(
        tmp_path,
        database_url=f"sqlite:///{tmp_path / 'linkpool.db'}",
        base_url=served.base_url,
        pools=[POOL],
    )


def claim_args(recipient: str, key: str | None, data: dict[str, Any] | None) -> list[str]:
    args = ["claim", POOL.name, "--recipient", recipient]
    if key is not None:
        args += ["--key", key]
    if data is not None:
        args += ["--data", json.dumps(data)]
    return args


def test_the_cli_from_an_empty_database_to_synced_claims(
    config: Path, served: SimulatorProcess
) -> None:
    upgraded = run_cli(config, "db", "upgrade")
    assert upgraded.returncode == 0, describe(upgraded)
    assert "database upgraded from empty to" in upgraded.stdout
    again = run_cli(config, "db", "upgrade")
    assert again.returncode == 0 and "already at revision" in again.stdout

    refill = run_json(config, "refill")["pools"][POOL.name]
    assert refill["errors"] == [] and refill["skipped"] is None
    assert refill["claimable_before"] == 0
    assert refill["lists_ready"] == 3 and refill["links_added"] == 150
    assert refill["claimable_after"] == 150 >= POOL.target_available

    status = run_json(config, "status")["pools"][POOL.name]
    assert status["claimable"] == 150 and status["claimed"] == 0 and status["health"] == "OK"
    assert len(status["lists"]) == 3

    claims = [run_json(config, *claim_args(*claim)) for claim in CLAIMS]
    urls = [claim["url"] for claim in claims]
    assert len(set(urls)) == len(CLAIMS)
    assert [claim["recipient"] for claim in claims] == [r for r, _, _ in CLAIMS]
    assert not any(claim["replayed"] for claim in claims)
    repeat = run_json(config, *claim_args(*CLAIMS[0]))
    assert repeat["replayed"] is True and repeat["url"] == urls[0]
    plain = run_cli(config, *claim_args("cust-4", None, None))
    assert plain.returncode == 0, describe(plain)
    urls.append(plain.stdout.strip())
    assert urls[-1].startswith("https://") and urls[-1] not in urls[:-1]
    for url in urls:
        assert served.open_link(url) == {"ok": True, "reason": "ok"}

    status = run_json(config, "status")["pools"][POOL.name]
    assert status["claimed"] == 4 and status["claimable"] == 150 - 4
    assert status["writeback_pending"] == 4

    exported = run_cli(config, "export", POOL.name)
    assert exported.returncode == 0, describe(exported)
    rows = list(csv.DictReader(io.StringIO(exported.stdout)))
    assert sorted(row["url"] for row in rows) == sorted(urls)
    by_recipient = {row["recipient"]: row for row in rows}
    assert json.loads(by_recipient["cust-2"]["data"]) == {"store": "7", "amount": 19.5}
    assert by_recipient["cust-1"]["key"] == "txn-1"
    as_json = run_cli(config, "export", POOL.name, "--format", "json")
    assert {record["url"] for record in json.loads(as_json.stdout)} == set(urls)

    synced = run_json(config, "sync")
    assert synced["written"] == 4 and synced["failed"] == 0 and synced["errors"] == []
    contact = served.api(
        "GET",
        f"/directories/{DIRECTORY_ID}/mailinglists/{by_recipient['cust-2']['mailing_list_id']}"
        f"/contacts/{by_recipient['cust-2']['contact_id']}",
    )
    assert contact["embeddedData"]["linkpool_recipient"] == "cust-2"
    assert contact["embeddedData"]["store"] == "7"
    assert contact["embeddedData"]["source"] == "e2e"
    status = run_json(config, "status")["pools"][POOL.name]
    assert status["writeback_pending"] == 0 and status["writeback_failed"] == 0

    gc = run_json(config, "gc")
    assert gc["errors"] == [] and gc["lists_deleted"] == 0 and gc["links_voided"] == 0
    orphans = run_json(config, "gc", "--orphans")
    assert orphans["orphans"] == []

    second = run_json(config, "refill")["pools"][POOL.name]
    assert second["lists_created"] == 0 and second["claimable_after"] == 150 - 4
    for url in urls:
        assert served.open_link(url)["ok"]

    unknown = run_cli(config, "claim", "no-such-pool", "--recipient", "cust-9")
    assert unknown.returncode == 2
    assert (
        unknown.stderr
        == "linkpool: error: unknown pool 'no-such-pool'; configured pools: checkin\n"
    )
