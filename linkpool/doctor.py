"""``linkpool doctor``: the live checks that are safe against a real brand, as plain data.

Every check reads only (GET): nothing is created, changed or deleted, and no link is read (the
links listing counts toward contact-frequency rules). Each check ends ``ok``, ``warn`` (works,
but look at it) or ``fail`` (linkpool will not work as configured), with one line saying what
was found. docs/qualtrics-client.md says what each one confirms.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

from linkpool.config import Settings
from linkpool.errors import QualtricsError
from linkpool.qualtrics.client import QualtricsClient, proxied_host, survey_active
from linkpool.qualtrics.endpoints import MAILING_LIST_LISTING_CAP

OK, WARN, FAIL = "ok", "warn", "fail"
EXIT_OK, EXIT_FAILED = 0, 1


@dataclass(frozen=True)
class Check:
    """One check: what was checked, how it ended, what was found."""

    name: str
    status: str
    found: str

    def to_dict(self) -> dict[str, str]:
        return {"check": self.name, "status": self.status, "found": self.found}


@dataclass(frozen=True)
class DoctorReport:
    checks: list[Check]

    @property
    def exit_code(self) -> int:
        """1 when any check failed (warnings do not fail), else 0."""
        return EXIT_FAILED if any(check.status == FAIL for check in self.checks) else EXIT_OK

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.exit_code == EXIT_OK,
            "exit_code": self.exit_code,
            "checks": [check.to_dict() for check in self.checks],
        }


def diagnose(settings: Settings, client: QualtricsClient) -> DoctorReport:
    """Run every check in order; a check that cannot run says why and the next one runs."""
    checks: list[Check] = []
    for name, check in _checks(settings, client):
        try:
            checks.append(check())
        except QualtricsError as exc:
            checks.append(Check(name, FAIL, str(exc)))
    return DoctorReport(checks)


def _checks(
    settings: Settings, client: QualtricsClient
) -> Iterator[tuple[str, Callable[[], Check]]]:
    yield "whoami", lambda: _whoami(client)
    headroom = settings.require_qualtrics().list_headroom
    yield "directory", lambda: _directory(client, headroom)
    for pool in settings.pools.values():
        name = f"survey of pool {pool.name}"
        yield name, partial(_survey, client, name, pool.survey_id)


def _whoami(client: QualtricsClient) -> Check:
    envelope_notice, me = client.whoami_with_notice()
    who = f"user {me.get('userId')} of brand {me.get('brandId')}"
    if me.get("datacenter"):
        who += f", datacenter {me.get('datacenter')}"
    if envelope_notice is None:
        return Check("whoami", OK, f"{who}; no notice")
    host = proxied_host(envelope_notice)
    if host is not None:
        return Check(
            "whoami",
            FAIL,
            f"{who}; requests are proxied to another datacenter (POSTs will fail): set "
            f"[qualtrics] base_url to https://{host}/API/v3",
        )
    return Check("whoami", WARN, f"{who}; Qualtrics notes: {envelope_notice}")


def _directory(client: QualtricsClient, headroom: int) -> Check:
    listed = client.count_mailing_lists()
    found = (
        f"directory {client.directory_id} reachable; its listing shows {listed:,} mailing "
        f"list(s) of the {MAILING_LIST_LISTING_CAP:,} it can show"
    )
    if listed >= MAILING_LIST_LISTING_CAP:
        return Check(
            "directory",
            FAIL,
            f"{found}: at the cap, so a list whose create got no answer cannot be found by "
            "name; refill creates no new list. Delete lists you no longer need",
        )
    if listed > MAILING_LIST_LISTING_CAP - headroom:
        return Check(
            "directory",
            WARN,
            f"{found}: within list_headroom ({headroom}) of the cap, refill creates no new list",
        )
    return Check("directory", OK, found)


def _survey(client: QualtricsClient, name: str, survey_id: str) -> Check:
    survey = client.get_survey(survey_id)
    title = survey.get("name") or survey_id
    active = survey_active(survey)
    if active is True:
        return Check(name, OK, f"{survey_id} ({title}) reachable and active")
    if active is False:
        return Check(
            name, FAIL, f"{survey_id} ({title}) is not active: Qualtrics makes no links for it"
        )
    return Check(name, WARN, f"{survey_id} ({title}) reachable; Qualtrics did not say if active")


__all__ = ["FAIL", "OK", "WARN", "Check", "DoctorReport", "diagnose"]
