"""``linkpool run --metrics-port``: a real daemon process against the simulator over HTTP, its
metrics scraped over HTTP while it refills (with 429s), then SIGTERM."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from linkpool.simulator import Simulator
from tests.acceptance.harness import (
    TOKEN,
    Pool,
    assert_clean_output,
    free_port,
    start_cli,
    stop,
    wait_until,
    write_config,
)

POOL = Pool("metered", target_available=70, low_water=10, list_size=5)
"""Fourteen lists of five calls each: more than a minute's worth of the simulator's limit."""
SCHEDULE = {"refill_interval": "1s", "gc_interval": "1s", "sync_interval": "1s"}


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample of a scrape, or None if the scrape has no such sample."""
    wanted = ",".join(f'{key}="{value}"' for key, value in labels.items())
    pattern = rf"^{re.escape(name)}{re.escape('{' + wanted + '}') if labels else ''} (\S+)$"
    found = re.search(pattern, text, re.M)
    return float(found.group(1)) if found else None


def test_the_daemon_serves_job_qualtrics_lease_and_pool_metrics(
    tmp_path: Path, simulator: Simulator, sqlite_url: str
) -> None:
    config = write_config(
        tmp_path,
        database_url=sqlite_url,
        base_url=simulator.base_url,
        pools=[POOL],
        schedule=SCHEDULE,
    )
    simulator.faults.rate_limit_per_minute = 60
    port = free_port()
    log = tmp_path / "daemon.log"
    daemon = start_cli(config, "run", "--metrics-port", str(port), log=log)

    def scrape() -> str:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        except httpx.TransportError:
            return ""

    def refilled() -> str:
        text = scrape()
        claimable = sample(text, "linkpool_pool_claimable", pool=POOL.name) or 0
        runs = sample(text, "linkpool_job_runs_total", job="refill", outcome="ok") or 0
        return text if claimable >= POOL.target_available and runs >= 1 else ""

    try:
        text = wait_until(refilled, timeout=90, interval=0.5, what="a refill, seen in metrics")
    finally:
        exit_code = stop(daemon)

    output = log.read_text(encoding="utf-8")
    assert exit_code == 0, output
    assert_clean_output(output)
    assert TOKEN not in text
    assert sample(text, "linkpool_daemon_leading") == 1
    assert sample(text, "linkpool_database_up") == 1
    assert (sample(text, "linkpool_job_last_success_timestamp_seconds", job="refill") or 0) > 0
    assert (sample(text, "linkpool_job_duration_seconds_count", job="refill") or 0) >= 1
    assert re.search(r'^linkpool_lease_holder\{holder="[^"]+",lease="leader"\} 1\.0$', text, re.M)
    created = re.findall(
        r'^linkpool_qualtrics_calls_total\{endpoint="([^"]+)",status="2\d\d"\}', text, re.M
    )
    assert any("mailinglists" in endpoint for endpoint in created), created
    limited = re.findall(r"^linkpool_qualtrics_rate_limited_total\{[^}]*\} (\S+)$", text, re.M)
    retries = re.findall(r"^linkpool_qualtrics_retries_total\{[^}]*\} (\S+)$", text, re.M)
    assert sum(float(value) for value in limited) > 0, "the test did not exercise rate limiting"
    assert sum(float(value) for value in retries) > 0
