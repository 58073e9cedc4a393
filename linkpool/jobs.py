"""The job registry: the daemon, the CLI and the docs iterate ``JOBS``.

Adding a job is one module with a ``Job`` (see ``linkpool.job``) and one line here.
"""

from __future__ import annotations

from datetime import timedelta

from linkpool.config import Settings
from linkpool.errors import ConfigError
from linkpool.gc import GC_JOB
from linkpool.job import Job
from linkpool.refill import REFILL_JOB
from linkpool.responses import RESPONSES_JOB
from linkpool.sync import SYNC_JOB

JOBS: tuple[Job, ...] = (
    SYNC_JOB,
    REFILL_JOB,
    GC_JOB,
    RESPONSES_JOB,
)


def job_names() -> tuple[str, ...]:
    return tuple(job.name for job in JOBS)


def intervals(settings: Settings) -> dict[str, timedelta]:
    """Each job's interval: ``[schedule] <job>_interval`` where given, else the job's default.

    Raises ConfigError for a ``[schedule]`` key that names no job."""
    configured = settings.schedule
    known = job_names()
    for name in configured:
        if name not in known:
            where = settings.source or "the configuration"
            raise ConfigError(
                f"{where}: schedule.{name}_interval: no such job; jobs: {', '.join(sorted(known))}"
            )
    return {job.name: configured.get(job.name, job.default_interval) for job in JOBS}


__all__ = ["JOBS", "intervals", "job_names"]
