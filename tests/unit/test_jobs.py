"""The job registry and the one report shape every job shares."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from linkpool.config import Settings
from linkpool.errors import ConfigError
from linkpool.gc import GcReport
from linkpool.job import JobReport
from linkpool.jobs import JOBS, intervals, job_names
from linkpool.refill import PoolReport, RefillReport
from linkpool.sync import SyncReport


def test_the_registry_names_each_job_once_with_its_lock_and_default() -> None:
    assert job_names() == ("sync", "refill", "gc", "responses")
    assert {job.name: job.lock for job in JOBS} == {
        "sync": "sync",
        "refill": "refill:<pool>",
        "gc": "gc",
        "responses": "responses",
    }
    assert {job.name: job.default_interval for job in JOBS} == {
        "sync": timedelta(seconds=30),
        "refill": timedelta(minutes=5),
        "gc": timedelta(hours=1),
        "responses": timedelta(minutes=10),
    }


def test_intervals_take_the_schedule_over_each_jobs_default() -> None:
    settings = replace(Settings(), schedule={"gc": timedelta(minutes=10)})  # type: ignore[arg-type]

    assert intervals(settings) == {
        "sync": timedelta(seconds=30),
        "refill": timedelta(minutes=5),
        "gc": timedelta(minutes=10),
        "responses": timedelta(minutes=10),
    }


def test_a_schedule_key_naming_no_job_is_a_config_error() -> None:
    settings = replace(
        Settings(),
        schedule={"foo": timedelta(minutes=1)},  # type: ignore[arg-type]
        source=Path("linkpool.toml"),
    )

    with pytest.raises(ConfigError) as caught:
        intervals(settings)

    assert str(caught.value) == (
        "linkpool.toml: schedule.foo_interval: no such job; jobs: gc, refill, responses, sync"
    )


@pytest.mark.parametrize(
    "report",
    [
        SyncReport(written=2, api_calls=Counter({"PUT x": 2})),
        GcReport(lists_deleted=1, api_calls=Counter({"DELETE y": 2})),
        RefillReport([PoolReport("a", links_added=4, api_calls=Counter({"POST z": 3}))]),
    ],
    ids=lambda report: type(report).__name__,
)
def test_every_report_has_a_summary_a_dict_and_flat_counters(report: JobReport) -> None:
    assert "\n" not in report.summary()
    assert report.to_dict()["api_calls"] == dict(report.api_calls)
    counters = report.counters()
    assert counters["api_calls"] == sum(report.api_calls.values())
    assert counters["errors"] == 0
    assert all(isinstance(value, float) for value in counters.values())


def test_refill_counters_add_up_the_pools() -> None:
    report = RefillReport(
        [PoolReport("a", links_added=4, shortfall=1), PoolReport("b", links_added=2, errors=["x"])]
    )

    counters = report.counters()

    assert (counters["links_added"], counters["shortfall"], counters["errors"]) == (6, 1, 1)
    assert counters["pools"] == 2
    assert report.has_errors and report.exit_code == 1
