"""What a job is: one shape for refill, gc, sync and whatever comes next.

A job has a name (its ``[schedule]`` key is ``<name>_interval``), the lease it holds while it
runs, a default interval (declared here, once, on the job), and ``run(context, stop)``, which
returns a report. Every report gives a one-line ``summary()``, ``to_dict()`` (the ``--json``
output) and ``counters()``, the flat numbers a metrics exporter reads. Which jobs exist is the
registry's business (``linkpool.jobs``).
"""

from __future__ import annotations

import dataclasses
import threading
from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol, cast

from linkpool.clock import Clock
from linkpool.config import Settings
from linkpool.errors import ConfigError
from linkpool.qualtrics.client import QualtricsClient
from linkpool.store import Store


@dataclass(frozen=True)
class JobContext:
    """What every job runs with."""

    settings: Settings
    client: QualtricsClient | None
    store: Store
    clock: Clock

    def require_client(self) -> QualtricsClient:
        if self.client is None:
            raise ConfigError("this job calls Qualtrics: it needs a client ([qualtrics] table)")
        return self.client


def _plain(value: Any) -> Any:
    """A figure as JSON: nested records by their ``to_dict()``, lists copied, times in seconds
    to the millisecond."""
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, float):
        return round(value, 3)
    return value


class JobReport(ABC):
    """What one run of a job did. Subclasses (dataclasses) carry ``api_calls`` (by templated
    endpoint) and ``errors``; their fields are their figures, and the rest is written here once."""

    api_calls: Counter[str]
    errors: list[str]
    not_figures: tuple[str, ...] = ()
    """Fields that are not entries of ``to_dict()`` (a pool report's name keys it instead)."""

    def figures(self) -> dict[str, Any]:
        """The report's own entries of ``to_dict()``: every field but ``api_calls`` and
        ``not_figures``, in declaration order, as plain JSON values."""
        return {
            field.name: _plain(getattr(self, field.name))
            for field in dataclasses.fields(cast(Any, self))
            if field.name != "api_calls" and field.name not in self.not_figures
        }

    @abstractmethod
    def summary_parts(self) -> list[str]:
        """The figures of the one-line summary, before the API calls and the errors."""

    @property
    def has_errors(self) -> bool:
        return bool(self.errors)

    def to_dict(self) -> dict[str, Any]:
        return {**self.figures(), "api_calls": dict(sorted(self.api_calls.items()))}

    def summary(self) -> str:
        parts = [*self.summary_parts(), f"{sum(self.api_calls.values())} API call(s)"]
        if self.errors:
            parts.append(f"{len(self.errors)} error(s): {self.errors[0]}")
        return ", ".join(parts)

    def counters(self) -> dict[str, float]:
        """Every number of ``figures()``, plus ``api_calls`` and ``errors`` as totals."""
        numbers = {
            name: float(value)
            for name, value in self.figures().items()
            if isinstance(value, int | float) and not isinstance(value, bool)
        }
        return {
            **numbers,
            "api_calls": float(sum(self.api_calls.values())),
            "errors": float(len(self.errors)),
        }


class Job(Protocol):
    """A scheduled job. ``lock`` names the lease it holds (``<pool>`` stands for each pool)."""

    @property
    def name(self) -> str: ...

    @property
    def lock(self) -> str: ...

    @property
    def default_interval(self) -> timedelta: ...

    def run(self, context: JobContext, stop: threading.Event) -> JobReport: ...


__all__ = ["Job", "JobContext", "JobReport"]
