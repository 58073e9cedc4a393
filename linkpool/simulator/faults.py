"""Fault injection: the ways the real Qualtrics misbehaves, each switchable at runtime."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta


@dataclass
class Faults:
    """What the simulator does wrong. All off by default; change any field at any time.

    Every random decision is drawn from the simulator's seeded ``random.Random``, so a run
    with the same seed and the same requests makes the same decisions.
    """

    rate_limit_per_minute: int | None = None
    """A token bucket of this many requests per minute (burst: one minute's worth); beyond it
    answer 429 with ``Retry-After`` (seconds) and ``meta.error.retryAfter``."""

    error_rate: float = 0.0
    """Fraction of requests answered 500 or 503 before anything is done."""

    lost_response_rate: float = 0.0
    """Fraction of POSTs that take effect but answer 504, as if the answer was lost."""

    link_lag: timedelta | None = None
    """For this long after a distribution is created, its links listing omits some links."""

    link_lag_fraction: float = 0.0
    """The fraction of links omitted during ``link_lag`` (the same links on every read)."""

    latency: float = 0.0
    """Seconds of real ``time.sleep`` added to every request (for benchmarks, not tests)."""

    exceeded_contact_frequency_rate: float = 0.0
    """Fraction of new links marked ``exceededContactFrequency: true`` (they do not open)."""

    import_failure_rate: float = 0.0
    """Fraction of contact imports whose job ends with ``status: "failed"``, importing nothing."""
    export_failure_rate: float = 0.0
    """Fraction of response exports that end ``failed`` instead of ``complete``."""

    export_polls: int = 2
    """Status polls a response export takes to complete (raise it for a slow export)."""

    lost_update_rate: float = 0.0
    """Fraction of bulk response updates that are started (and later applied) but answer 504."""

    refuse_bulk_updates: bool = False
    """Answer every bulk response update 400, as a brand without the feature would."""

    def __post_init__(self) -> None:
        if self.export_polls < 1:
            raise ValueError("Faults.export_polls must be at least 1")
        for name in (
            "import_failure_rate",
            "error_rate",
            "lost_response_rate",
            "link_lag_fraction",
            "exceeded_contact_frequency_rate",
            "export_failure_rate",
            "lost_update_rate",
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"Faults.{name} must be between 0 and 1, not {value!r}")
        if self.rate_limit_per_minute is not None and self.rate_limit_per_minute < 1:
            raise ValueError("Faults.rate_limit_per_minute must be at least 1, or None")
        if self.latency < 0:
            raise ValueError("Faults.latency must not be negative")
