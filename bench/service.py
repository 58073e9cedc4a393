"""Claims over HTTP (``linkpool serve``) beside ``LinkPool.claim`` in process, same run.

For each database (SQLite file, PostgreSQL) and each concurrency (1, 8, 32), a fresh pool is
seeded, then for ``--seconds``:
- in process: that many processes call ``LinkPool.claim`` in a loop (each its own engine);
- over HTTP: ``wrk`` (compiled, two threads: it does not eat the cores the server needs) keeps
  that many connections busy POSTing claims, each with a unique Idempotency-Key
  (bench/claim.lua), against ``linkpool serve --workers W``.

    apt-get install -y wrk
    python bench/service.py                               # both databases, 1/8/32
    python bench/service.py --databases postgres --seconds 5 --workers 2 --connections 2
"""

from __future__ import annotations

import sys

# Keep bench/ off the path: the scripts there are imported by file (``_claim_bench_module``), and
# a module in it must never stand in for one of the standard library's (bench/http.py hid
# ``http`` from httpx and uvicorn, which is why this file is named service.py).
sys.path = [entry for entry in sys.path if not entry.endswith("bench")]

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import multiprocessing  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from pathlib import Path  # noqa: E402

import httpx  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from linkpool import LinkPool, PoolSettings  # noqa: E402
from linkpool.clock import SystemClock  # noqa: E402
from linkpool.config import ServiceSettings  # noqa: E402
from linkpool.db import create_engine, upgrade  # noqa: E402
from linkpool.service.keys import create_key  # noqa: E402
from linkpool.store import Store  # noqa: E402

HERE = Path(__file__).resolve().parent
POOL = PoolSettings(name="bench", survey_id="SV_BenchSurvey0001")
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
LINKPOOL = str(Path(sys.executable).with_name("linkpool"))


def _claim_bench_module():
    spec = importlib.util.spec_from_file_location("bench_claim", HERE / "claim.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


seed = _claim_bench_module().seed  # the claim benchmark's seeding: one list of N links


def fresh_database(kind: str, workdir: Path, postgres: str) -> tuple[str, object]:
    """A migrated empty database; returns its URL and a cleanup callable."""
    if kind == "sqlite":
        url = f"sqlite:///{workdir / f'{uuid.uuid4().hex[:8]}.db'}"
        engine = create_engine(url)
        upgrade(engine)
        engine.dispose()
        return url, lambda: None
    admin = sa.create_engine(postgres, isolation_level="AUTOCOMMIT")
    name = f"linkpool_bench_http_{uuid.uuid4().hex[:8]}"
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.engine.make_url(postgres).set(database=name).render_as_string(hide_password=False)
    engine = create_engine(url)
    upgrade(engine)
    engine.dispose()

    def drop() -> None:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return url, drop


def checkpoint(kind: str, url: str) -> None:
    """Write out what seeding (and the previous measurement) left dirty, so that neither half
    pays for the other's writes with a checkpoint in the middle of its run."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            if kind == "sqlite":
                connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            else:
                connection.exec_driver_sql("CHECKPOINT")
    finally:
        engine.dispose()


# --- in process ----------------------------------------------------------------------------


def claim_for(url: str, seconds: float, start, out) -> None:
    with LinkPool(database_url=url, pools=[POOL]) as lp:
        lp.claim("bench", recipient="warm-up")
        latencies = []
        start.wait()
        deadline = time.perf_counter() + seconds
        n = 0
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            lp.claim("bench", recipient=f"r{n}", key=f"{uuid.uuid4().hex}")
            latencies.append(time.perf_counter() - t0)
            n += 1
    out.put(latencies)


def in_process(url: str, concurrency: int, seconds: float) -> dict[str, float]:
    context = multiprocessing.get_context("spawn")
    start, out = context.Event(), context.Queue()
    workers = [
        context.Process(target=claim_for, args=(url, seconds, start, out))
        for _ in range(concurrency)
    ]
    for worker in workers:
        worker.start()
    time.sleep(1.0 + 0.05 * concurrency)  # let every process connect and warm up
    start.set()
    latencies = [value for _ in workers for value in out.get()]
    for worker in workers:
        worker.join()
    latencies.sort()
    return {
        "rate": len(latencies) / seconds,
        "p50": statistics.median(latencies) * 1000,
        "p99": latencies[int(len(latencies) * 0.99) - 1] * 1000,
    }


# --- over HTTP -----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def over_http(
    url: str,
    concurrency: int,
    seconds: float,
    workers: int,
    connections: int | None,
    workdir: Path,
) -> dict[str, float]:
    config = workdir / "linkpool.toml"
    service = "" if connections is None else f"[service]\nconnections = {connections}\n"
    config.write_text(
        f'[database]\nurl = "{url}"\n[pools.bench]\nsurvey_id = "{POOL.survey_id}"\n{service}',
        encoding="utf-8",
    )
    engine = create_engine(url)
    _, key = create_key(
        Store(engine), f"bench-{uuid.uuid4().hex[:6]}", None, now=SystemClock().now()
    )
    engine.dispose()
    port = free_port()
    log = (workdir / "serve.log").open("w")
    server = subprocess.Popen(
        [LINKPOOL, "--config", str(config), "serve", "--port", str(port)]
        + ["--workers", str(workers)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base)
        command = [
            "wrk",
            "-t",
            str(min(2, concurrency)),
            "-c",
            str(concurrency),
            "-d",
            f"{seconds:g}s",
            "--latency",
            "-s",
            str(HERE / "claim.lua"),
            base,
            "--",
            key,
            "bench",
        ]
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
        log.close()
    return parse_wrk(output, seconds)


def wait_ready(base: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(base + "/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise SystemExit("linkpool serve did not become ready")


def parse_wrk(output: str, seconds: float) -> dict[str, float]:
    match = re.search(
        r"LINKPOOL p50_us=(\d+) p99_us=(\d+) requests=(\d+) errors_status=(\d+)", output
    )
    if match is None:
        raise SystemExit(f"unexpected wrk output:\n{output}")
    p50, p99, requests, errors = (int(value) for value in match.groups())
    if errors:
        raise SystemExit(
            f"{errors} claim(s) over HTTP failed: seed more links or shorten --seconds"
        )
    return {"rate": requests / seconds, "p50": p50 / 1000, "p99": p99 / 1000}


# --- the run -------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--databases", nargs="+", default=["sqlite", "postgres"])
    parser.add_argument("--concurrency", nargs="+", type=int, default=[1, 8, 32])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--workers", type=int, default=1, help="linkpool serve --workers")
    parser.add_argument(
        "--connections", type=int, help="[service] connections (default: the product's)"
    )
    parser.add_argument("--links", type=int, default=60_000, help="links seeded per measurement")
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES, help="an admin URL")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("bench/service.py needs wrk: apt-get install -y wrk")
    threads = args.connections or ServiceSettings().connections
    print(f"<!-- linkpool serve --workers {args.workers}, [service] connections = {threads} -->")
    print(
        "| database | connections | in-process claims/s | p50 ms | p99 ms "
        "| HTTP claims/s | p50 ms | p99 ms | HTTP / in-process | load average |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for kind in args.databases:
        for concurrency in args.concurrency:
            results = []
            for mode in ("in-process", "http"):
                with tempfile.TemporaryDirectory() as tmp:
                    workdir = Path(tmp)
                    url, cleanup = fresh_database(kind, workdir, args.postgres)
                    try:
                        seed(url, args.links)
                        checkpoint(kind, url)
                        if mode == "in-process":
                            results.append(in_process(url, concurrency, args.seconds))
                        else:
                            results.append(
                                over_http(
                                    url,
                                    concurrency,
                                    args.seconds,
                                    args.workers,
                                    args.connections,
                                    workdir,
                                )
                            )
                    finally:
                        cleanup()  # type: ignore[operator]
            local, remote = results
            print(
                f"| {kind} | {concurrency} | {local['rate']:.0f} | {local['p50']:.2f} "
                f"| {local['p99']:.2f} | {remote['rate']:.0f} | {remote['p50']:.2f} "
                f"| {remote['p99']:.2f} | {remote['rate'] / local['rate']:.0%} "
                f"| {os.getloadavg()[0]:.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
