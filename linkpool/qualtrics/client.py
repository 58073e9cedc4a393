"""The synchronous Qualtrics v3 client: every call linkpool makes to Qualtrics goes through here.

Each call is throttled (a shared token bucket and a cap on requests in flight), retried when that
is safe, and turned into a typed error from ``linkpool.errors`` when it fails. Errors, log records
and ``repr(client)`` name the method and the *templated* endpoint
(``GET /directories/{directoryId}/mailinglists``), never the token or a URL's query string.

Every attempt (retries included) is counted in ``client.calls``, keyed by templated endpoint;
``with client.tally() as calls:`` also counts the attempts the current thread makes inside the
block, so jobs sharing one client each report their own calls. ``client.outcomes`` counts the
attempts by (endpoint, answer: the HTTP status, or the transport error's name) and
``client.retries`` the attempts that were retries, by endpoint: what the daemon's metrics read.

Retries: GET, PUT and DELETE are retried on 429, 5xx, timeouts and connection errors. A POST is
retried only when Qualtrics certainly did not act on it: a 429, or a connection that was never
established. A POST that times out, loses its connection or gets a 5xx raises ``OutcomeUnknown``.
"""

from __future__ import annotations

import logging
import random
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, TypeGuard
from urllib.parse import quote

import httpx

from linkpool.clock import Clock, SystemClock, pause, utc
from linkpool.errors import (
    AuthError,
    BadRequest,
    ConfigError,
    ImportFailed,
    Interrupted,
    NotFound,
    OutcomeUnknown,
    QualtricsError,
    QualtricsTimeout,
    QualtricsUnreachable,
    RateLimited,
    ServerError,
    WrongDatacenter,
)
from linkpool.qualtrics import endpoints as api
from linkpool.qualtrics.endpoints import (
    MAILING_LIST_LISTING_CAP,
    MAX_CONTACTS_PAGE_SIZE,
    Endpoint,
)
from linkpool.qualtrics.retry import (
    RetryPolicy,
    is_retryable_status,
    retry_after,
    was_not_sent,
)
from linkpool.qualtrics.throttle import Throttle
from linkpool.qualtrics.transport import (
    BEFORE_SEND,
    STREAM_BODY,
    BoundedTransport,
    TotalTimeout,
    environment_mounts,
)

if TYPE_CHECKING:
    from linkpool.config import QualtricsSettings

logger = logging.getLogger("linkpool.qualtrics")

EXPIRATION_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
"""ISO 8601 in UTC with ``Z``, as the reference's example: a naive ``YYYY-MM-DD HH:MM:SS`` is
read in the account's time zone (a production pool's links expired 6 hours off)."""

PROXIED_NOTICE = re.compile(r"use this host instead:\s*([A-Za-z0-9.-]+)", re.IGNORECASE)
"""The ``meta.notice`` of a request sent to the wrong datacenter names the right host."""

FAILED_IMPORT_STATUSES = frozenset(
    {"failed", "failure", "error", "cancelled", "canceled", "aborted"}
)
"""Import ``status`` values (free text, no documented enum) that end the wait at once."""
ISO_FORMAT = EXPIRATION_FORMAT
"""Times sent to the response export (``startDate``): the same ISO 8601 UTC form."""
DOWNLOAD_CHUNK = 64 * 1024

try:
    __version__ = version("linkpool")
except PackageNotFoundError:
    __version__ = "0.0.0"

USER_AGENT = f"linkpool/{__version__}"

CONTACT_PREFIX = "CID_"
"""A directory contact: what a contact update addresses."""
LOOKUP_PREFIX = "CGC_"
"""A contact's entry in one list: what the links listing's ``contactId`` may be instead."""

QUALTRICS_ID = re.compile(r"[A-Za-z0-9_-]{1,100}")
"""What every id Qualtrics answers looks like (``CG_…``, ``EMD_…``, ``CID_…``, ``CGC_…``,
``R_…``). Ids go into request paths and, unchecked, into ``linkpool export``'s CSV (the export
quotes only values that may need it): one that does not look like this is refused where it is
read from an answer, never stored."""


def is_qualtrics_id(value: object) -> TypeGuard[str]:
    """``value`` looks like an id Qualtrics answers (``QUALTRICS_ID``)."""
    return isinstance(value, str) and QUALTRICS_ID.fullmatch(value) is not None


@dataclass(frozen=True)
class ImportJob:
    """A started bulk import: its id and the contacts Qualtrics refused outright.

    ``unprocessed`` holds one entry per refused contact: its index when Qualtrics gave one
    (the docs say indexes), else None (the generated client types the entries as objects)."""

    id: str
    unprocessed: list[int | None] = field(default_factory=list)


@dataclass(frozen=True)
class ImportStatus:
    """How far a bulk import got. The poll answer has no ``unprocessed``: only the 202 does."""

    percent_complete: float
    added: int
    updated: int
    failed: int
    status: str = ""
    """Free text: Qualtrics documents no enum for it."""

    @property
    def complete(self) -> bool:
        return self.percent_complete >= 100

    @property
    def has_failed(self) -> bool:
        return self.status.strip().lower() in FAILED_IMPORT_STATUSES


@dataclass(frozen=True)
class JobProgress:
    """How far a response export or a bulk response update got. ``status`` is Qualtrics'
    (``inProgress``, ``complete``, ``failed``); ``file_id`` is set once an export is complete."""

    status: str
    percent_complete: float
    file_id: str | None = None

    @property
    def complete(self) -> bool:
        return self.status == "complete"

    @property
    def failed(self) -> bool:
        return self.status == "failed"


@dataclass(frozen=True)
class Access:
    """What ``check_access`` found: whom the token belongs to, and what Qualtrics noted."""

    user_id: str
    brand_id: str | None
    datacenter: str | None
    notice: str | None
    """``meta.notice``, e.g. that the request was proxied from another datacenter (where GETs
    work but POSTs may fail): worth showing to whoever set ``base_url``."""


TRANSIENT_ERRORS = (RateLimited, ServerError, QualtricsTimeout, QualtricsUnreachable)
"""What trying again later can fix."""


class _CorruptAnswer(httpx.ReadError):
    """The answer's body could not be decoded (a broken ``Content-Encoding``)."""


_OWN_TRANSPORT_ERRORS = (TotalTimeout, _CorruptAnswer)
"""Raised by the client itself: their messages are ours, safe to show."""


class _Tallies(threading.local):
    """The Counters of the ``tally`` blocks the current thread is in, innermost last."""

    def __init__(self) -> None:
        self.stack: list[Counter[str]] = []


class _Guards(threading.local):
    """The checks of the ``guarded`` blocks the current thread is in."""

    def __init__(self) -> None:
        self.stack: list[Callable[[], None]] = []


class QualtricsClient:
    """A thread-safe client for the Qualtrics v3 calls linkpool uses.

    ``transport`` lets tests mount the simulator (``httpx.WSGITransport``) or a mock; without
    one, requests go through a ``BoundedTransport``, which bounds each request's whole time by
    ``timeout``. ``clock`` drives the throttle, retry backoff and import polling; ``rng`` makes
    backoff jitter reproducible.
    """

    def __init__(
        self,
        *,
        base_url: str,
        token: str,
        directory_id: str,
        timeout: float = 30.0,
        requests_per_minute: int = 3000,
        links_requests_per_minute: int | None = 500,
        max_concurrency: int = 4,
        max_retries: int = 5,
        transport: httpx.BaseTransport | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.directory_id = directory_id
        self.calls: Counter[str] = Counter()
        self.outcomes: Counter[tuple[str, str]] = Counter()
        self.retries: Counter[str] = Counter()
        self.retry_policy = RetryPolicy(max_retries=max_retries)
        self._token = token
        self._clock: Clock = clock or SystemClock()
        self._rng = rng or random.Random()
        self._throttle = Throttle(
            requests_per_minute=requests_per_minute,
            max_concurrency=max_concurrency,
            clock=self._clock,
            endpoint_budgets=(
                {api.LIST_LINKS.key: links_requests_per_minute} if links_requests_per_minute else {}
            ),
        )
        self._access: Access | None = None
        self._access_lock = threading.Lock()
        self._calls_lock = threading.Lock()
        self._tallies = _Tallies()
        self._guards = _Guards()
        self._stop: threading.Event | None = None
        self._http = httpx.Client(
            base_url=self.base_url,
            headers={
                "X-API-TOKEN": token,
                "User-Agent": USER_AGENT,
                "Accept": "application/json",
            },
            timeout=httpx.Timeout(timeout),
            transport=BoundedTransport(timeout) if transport is None else transport,
            mounts=_proxy_mounts(timeout) if transport is None else None,
        )

    @classmethod
    def from_settings(
        cls,
        settings: QualtricsSettings,
        *,
        transport: httpx.BaseTransport | None = None,
        clock: Clock | None = None,
    ) -> QualtricsClient:
        """A client configured from ``[qualtrics]``; reads the token from its environment variable."""
        return cls(
            base_url=settings.base_url,
            token=settings.token(),
            directory_id=settings.directory_id,
            timeout=settings.timeout,
            requests_per_minute=settings.requests_per_minute,
            links_requests_per_minute=settings.links_requests_per_minute,
            max_concurrency=settings.max_concurrency,
            max_retries=settings.max_retries,
            transport=transport,
            clock=clock,
        )

    def __repr__(self) -> str:
        return f"QualtricsClient(base_url={self.base_url!r}, directory_id={self.directory_id!r})"

    def close(self) -> None:
        self._http.close()

    def stop_when(self, event: threading.Event) -> None:
        """Once ``event`` is set, a wait of this client (a retry's backoff, an import's
        polling) ends within a second by raising ``Interrupted``, instead of running out:
        a shutdown is not held up by Qualtrics being slow. Requests in flight finish."""
        self._stop = event

    def _pause(self, seconds: float, what: str) -> None:
        if not pause(self._clock, seconds, self._stop):
            raise Interrupted(f"stopped while {what}: the next run picks it up")

    def __enter__(self) -> QualtricsClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    @contextmanager
    def tally(self, calls: Counter[str] | None = None) -> Iterator[Counter[str]]:
        """Count into ``calls`` (a new Counter if None) every attempt this thread makes inside
        the block, keyed like ``client.calls``.

        Blocks nest (each enclosing tally counts too) and are per thread: a worker thread
        enters the block itself, with the same Counter, to have its calls counted there.
        Counters are updated under the client's lock, so threads may share one.
        """
        calls = Counter() if calls is None else calls
        self._tallies.stack.append(calls)
        try:
            yield calls
        finally:
            self._tallies.stack.pop()

    @contextmanager
    def guarded(self, check: Callable[[], None]) -> Iterator[None]:
        """Run ``check`` before every request this thread sends inside the block (right before
        it goes out, after any throttle wait); whatever it raises stops the request unsent.

        A lease holder passes ``Lease.check``, so that a process that froze past its lease
        makes no call once it wakes. Per thread, like ``tally``: worker threads enter it too.
        """
        self._guards.stack.append(check)
        try:
            yield
        finally:
            self._guards.stack.pop()

    # --- calls ---

    def whoami(self) -> dict[str, Any]:
        """Who the token belongs to (``userId``, ``brandId``…): a cheap credentials check."""
        return self._result(api.WHOAMI)

    def whoami_with_notice(self) -> tuple[str | None, dict[str, Any]]:
        """``whoami``'s ``meta.notice`` (None without one) and its ``result``."""
        envelope = self._call(api.WHOAMI)
        notice = _object(envelope, "meta").get("notice")
        return (self._redacted(notice) if notice else None), _result_of(envelope, api.WHOAMI)

    def check_access(self) -> Access:
        """Whether the token, ``base_url`` and ``directory_id`` work, in two cheap reads.

        ``whoami`` checks the token and the host; one list of the directory's mailing lists
        (a page of one) checks the directory. Raises the typed error of the first that fails:
        call it before writing anything, so a wrong setting fails as one clear error.
        """
        envelope = self._call(api.WHOAMI)
        me = _result_of(envelope, api.WHOAMI)
        probe = api.LIST_MAILING_LISTS
        self._request(probe, self._url(probe, None), params={"pageSize": "1"})
        notice = _object(envelope, "meta").get("notice")
        return Access(
            user_id=_required_str(me, "userId", api.WHOAMI),
            brand_id=_optional_str(me, "brandId"),
            datacenter=_optional_str(me, "datacenter"),
            notice=str(notice) if notice else None,
        )

    def verify_host(self) -> Access | None:
        """``check_access`` once per client: raise WrongDatacenter when Qualtrics says the
        requests are proxied to another host (GETs would work, POSTs fail with 400), and log
        any other notice. Jobs call it first; later calls return the first answer.

        A refused token or directory raises; a transient failure (429, 5xx, timeout, no
        connection) is logged and returns None, to be checked again next time: the job's own
        calls then meet it and handle it as they do."""
        with self._access_lock:
            if self._access is None:
                try:
                    access = self.check_access()
                except TRANSIENT_ERRORS as exc:
                    logger.warning("could not check the Qualtrics host yet: %s", exc)
                    return None
                if access.notice:
                    host = proxied_host(access.notice)
                    if host is not None:
                        raise WrongDatacenter(
                            f"Qualtrics proxied the request from {self._http.base_url.host} "
                            f"to another datacenter: set [qualtrics] base_url to "
                            f"https://{host}/API/v3 (POSTs to the wrong host fail with 400)",
                            method=api.WHOAMI.method,
                            endpoint=api.WHOAMI.path,
                        )
                    logger.warning("Qualtrics notice: %s", self._redacted(access.notice))
                self._access = access
            return self._access

    def create_mailing_list(self, name: str) -> str:
        """Create a mailing list in the directory; returns its ``CG_`` id."""
        return self._created_id(api.CREATE_MAILING_LIST, json={"name": name})

    def get_mailing_list(self, mailing_list_id: str) -> dict[str, Any]:
        return self._result(api.GET_MAILING_LIST, {"mailingListId": mailing_list_id})

    def count_contacts(self, mailing_list_id: str) -> int:
        """The list's contact count (``includeCount=true``): whether an import whose answer was
        lost went in. Qualtrics calls the count approximate; callers compare it with what
        they imported, never trust it for more."""
        endpoint = api.GET_MAILING_LIST
        url = self._url(endpoint, {"mailingListId": mailing_list_id})
        envelope = self._request(endpoint, url, params={"includeCount": "true"})
        count = _result_of(envelope, endpoint).get("contactCount")
        return count if isinstance(count, int) and not isinstance(count, bool) else 0

    def iter_mailing_lists(self) -> Iterator[dict[str, Any]]:
        """The directory's mailing lists (``mailingListId``, ``name``, …), page by page.

        Qualtrics lists at most ``MAILING_LIST_LISTING_CAP`` (10,000) of them "at a time": a
        directory holding more shows only some. See ``find_mailing_list``."""
        return self._paginate(api.LIST_MAILING_LISTS)

    def find_mailing_list(self, name: str) -> ListLookup:
        """Look a list up by its exact name, walking every page (no name filter is documented).

        ``ListLookup.capped`` says the listing stopped at the cap without finding it: the list
        may still exist beyond what Qualtrics shows, so "not found" is not proof."""
        seen = 0
        for element in self.iter_mailing_lists():
            seen += 1
            if element.get("name") == name:
                mailing_list_id = required_id(element, "mailingListId", api.LIST_MAILING_LISTS)
                return ListLookup(mailing_list_id=mailing_list_id, seen=seen)
        return ListLookup(mailing_list_id=None, seen=seen)

    def count_mailing_lists(self) -> int:
        """How many lists the directory's listing shows (at most the 10,000 cap)."""
        return sum(1 for _ in self.iter_mailing_lists())

    def delete_mailing_list(self, mailing_list_id: str) -> None:
        """Delete a list (and so break its links). A 404 raises NotFound: the caller decides."""
        self._call(api.DELETE_MAILING_LIST, {"mailingListId": mailing_list_id})

    def update_contact(
        self, mailing_list_id: str, contact_id: str, fields: Mapping[str, Any]
    ) -> None:
        """Update a contact in a list, e.g. ``{"embeddedData": {...}}``."""
        ids = {"mailingListId": mailing_list_id, "contactId": contact_id}
        self._call(api.UPDATE_CONTACT, ids, json=dict(fields))

    def iter_contacts(self, mailing_list_id: str) -> Iterator[dict[str, Any]]:
        """A list's members (``id`` or ``contactId``: the ``CID_``; ``extRef``…), 50 a page."""
        ids = {"mailingListId": mailing_list_id}
        params = {"pageSize": str(MAX_CONTACTS_PAGE_SIZE)}
        return self._paginate(api.LIST_CONTACTS, ids, params=params)

    def contact_ids_by_ext_ref(self, mailing_list_id: str) -> dict[str, str]:
        """extRef → directory contact id (``CID_``) of a list's members, in one pass
        (``ceil(members / 50)`` calls)."""
        found: dict[str, str] = {}
        for member in self.iter_contacts(mailing_list_id):
            ext_ref = member.get("extRef")
            contact_id = member.get("contactId") or member.get("id")
            if isinstance(ext_ref, str) and is_qualtrics_id(contact_id):
                found[ext_ref] = contact_id
        return found

    def delete_contact(self, mailing_list_id: str, contact_id: str) -> None:
        """Remove a contact from a list; it stays in the directory."""
        ids = {"mailingListId": mailing_list_id, "contactId": contact_id}
        self._call(api.DELETE_CONTACT, ids)

    def delete_directory_contact(self, contact_id: str) -> None:
        """Delete a contact from the directory itself."""
        self._call(api.DELETE_DIRECTORY_CONTACT, {"contactId": contact_id})

    def purge_list_contacts(self, mailing_list_id: str) -> int:
        """Delete every contact of a mailing list from the directory (the list stays): for a
        list whose contacts linkpool never recorded (abandoned before its links were stored),
        the list is the only way to find them. Read whole before deleting, so that paging is
        not disturbed. Returns how many were deleted."""
        contact_ids = [
            str(element.get("contactId") or element["id"])  # documented as contactId
            for element in self.iter_contacts(mailing_list_id)
        ]
        for contact_id in contact_ids:
            try:
                self.delete_directory_contact(contact_id)
            except NotFound:
                pass  # gone already
        return len(contact_ids)

    def start_import(self, mailing_list_id: str, contacts: list[dict[str, Any]]) -> ImportJob:
        """Start a bulk import of ``contacts`` into a list (at most 10,000 and 5 MB)."""
        ids = {"mailingListId": mailing_list_id}
        result = self._result(api.START_IMPORT, ids, json={"contacts": contacts})
        return ImportJob(
            id=_required_str(result, "id", api.START_IMPORT),
            unprocessed=_unprocessed(result),
        )

    def get_import(self, mailing_list_id: str, import_id: str) -> ImportStatus:
        ids = {"mailingListId": mailing_list_id, "importId": import_id}
        result = self._result(api.GET_IMPORT, ids)
        contacts = result.get("contacts") or {}
        count = contacts.get("count") or {}
        return ImportStatus(
            percent_complete=float(result.get("percentComplete") or 0),
            added=int(count.get("added") or 0),
            updated=int(count.get("updated") or 0),
            failed=int(count.get("failed") or 0),
            status=str(result.get("status") or ""),
        )

    def wait_for_import(
        self,
        mailing_list_id: str,
        import_id: str,
        *,
        poll_interval: float = 1.0,
        timeout: float = 600.0,
    ) -> ImportStatus:
        """Poll an import (sleeping on the clock) until it is complete.

        Raises ImportFailed at once when its ``status`` says it failed, and QualtricsTimeout
        if it is not complete after ``timeout`` seconds of clock time.
        """
        deadline = self._clock.monotonic() + timeout
        while True:
            status = self.get_import(mailing_list_id, import_id)
            if status.has_failed:
                raise ImportFailed(
                    f"import {import_id} into mailing list {mailing_list_id} ended with "
                    f"status {status.status!r} at {status.percent_complete:g}%",
                    method=api.GET_IMPORT.method,
                    endpoint=api.GET_IMPORT.path,
                )
            if status.complete:
                return status
            remaining = deadline - self._clock.monotonic()
            if remaining <= 0:
                raise QualtricsTimeout(
                    f"import {import_id} into mailing list {mailing_list_id} was still at "
                    f"{status.percent_complete:g}% after {timeout:g}s; it may finish later: "
                    "check it again or raise the timeout",
                    method=api.GET_IMPORT.method,
                    endpoint=api.GET_IMPORT.path,
                )
            self._pause(min(poll_interval, remaining), f"waiting for import {import_id}")

    def create_link_distribution(
        self, *, survey_id: str, mailing_list_id: str, description: str, expires_at: datetime
    ) -> str:
        """Generate personal links for every contact of a list; returns the ``EMD_`` id.

        ``expires_at`` is sent in UTC (naive datetimes are taken to be UTC already).
        """
        body = {
            "surveyId": survey_id,
            "linkType": "Individual",
            "description": description,
            "action": "CreateDistribution",
            "expirationDate": utc(expires_at).strftime(EXPIRATION_FORMAT),
            "mailingListId": mailing_list_id,
        }
        return self._created_id(api.CREATE_DISTRIBUTION, json=body)

    def iter_distributions(self, survey_id: str) -> Iterator[dict[str, Any]]:
        return self._paginate(api.LIST_DISTRIBUTIONS, params={"surveyId": survey_id})

    def get_distribution(self, distribution_id: str) -> dict[str, Any]:
        return self._result(api.GET_DISTRIBUTION, {"distributionId": distribution_id})

    def delete_distribution(self, distribution_id: str) -> None:
        """Delete a distribution (and so break its links)."""
        self._call(api.DELETE_DISTRIBUTION, {"distributionId": distribution_id})

    def iter_links(self, distribution_id: str, survey_id: str) -> Iterator[dict[str, Any]]:
        """The link elements of a distribution, each ``link`` normalised (``normal_link``).

        The listing is eventually consistent, and every read counts toward the contacts'
        contact-frequency rules: read it again only while links are missing."""
        ids = {"distributionId": distribution_id}
        for element in self._paginate(api.LIST_LINKS, ids, params={"surveyId": survey_id}):
            if isinstance(element.get("link"), str):
                element = {**element, "link": normal_link(element["link"])}
            yield element

    def get_survey(self, survey_id: str) -> dict[str, Any]:
        """A survey's metadata (``name``, ``isActive``…): whether links can be made for it."""
        return self._result(api.GET_SURVEY, {"surveyId": survey_id})

    # --- responses ---

    def start_response_export(self, survey_id: str, *, start: datetime) -> str:
        """Start a JSON export of the responses recorded at or after ``start``; returns its
        progress id."""
        body = {"format": "json", "startDate": utc(start).strftime(ISO_FORMAT)}
        result = self._result(api.START_RESPONSE_EXPORT, {"surveyId": survey_id}, json=body)
        return _required_str(result, "progressId", api.START_RESPONSE_EXPORT)

    def get_response_export(self, survey_id: str, progress_id: str) -> JobProgress:
        ids = {"surveyId": survey_id, "progressId": progress_id}
        return _progress(self._result(api.GET_RESPONSE_EXPORT, ids))

    def download_response_export(self, survey_id: str, file_id: str, sink: IO[bytes]) -> int:
        """Stream the export's zip into ``sink`` (never whole in memory); returns its size.

        Retried like any GET: ``sink`` is rewound and truncated before each attempt. ``timeout``
        bounds the request in total up to its headers, then each read of the file: an export's
        size is not known, nor how long a slow link takes to carry it."""
        endpoint = api.GET_RESPONSE_EXPORT_FILE
        stream_body = {STREAM_BODY: True}
        url = self._url(endpoint, {"surveyId": survey_id, "fileId": file_id})
        attempt = 0
        while True:
            attempt += 1
            sink.seek(0)
            sink.truncate()
            try:
                with self._throttle.slot():
                    self._count(endpoint.key)
                    with self._http.stream("GET", url, extensions=stream_body) as response:
                        if response.is_success:
                            for chunk in response.iter_bytes(DOWNLOAD_CHUNK):
                                sink.write(chunk)
                            return sink.tell()
                        response.read()
                        body = _json_body(response)
                        delay = self._delay_after_error_status(endpoint, response, body, attempt)
            except httpx.TransportError as exc:
                delay = self._delay_after_transport_error(endpoint, exc, attempt)
            self._clock.sleep(delay)

    def start_response_update(self, survey_id: str, updates: list[dict[str, Any]]) -> str:
        """Start a bulk update of recorded responses (``{responseId, embeddedData}`` items);
        returns its progress id. A POST: a lost answer raises OutcomeUnknown."""
        body = {"updates": updates, "ignoreMissingResponses": True}
        result = self._result(api.START_RESPONSE_UPDATE, {"surveyId": survey_id}, json=body)
        return _required_str(result, "progressId", api.START_RESPONSE_UPDATE)

    def get_response_update(self, survey_id: str, progress_id: str) -> JobProgress:
        ids = {"surveyId": survey_id, "progressId": progress_id}
        return _progress(self._result(api.GET_RESPONSE_UPDATE, ids))

    def update_response(
        self, survey_id: str, response_id: str, embedded_data: Mapping[str, str]
    ) -> None:
        """Set embedded data on one recorded response (the fallback of a refused bulk job)."""
        body = {
            "surveyId": survey_id,
            "embeddedData": dict(embedded_data),
            "resetRecordedDate": False,
        }
        self._call(api.UPDATE_RESPONSE, {"responseId": response_id}, json=body)

    # --- envelope ---

    def _result(
        self, endpoint: Endpoint, ids: Mapping[str, str] | None = None, *, json: Any = None
    ) -> dict[str, Any]:
        envelope = self._call(endpoint, ids, json=json)
        return _result_of(envelope, endpoint)

    def _created_id(self, endpoint: Endpoint, *, json: Any) -> str:
        return required_id(self._result(endpoint, json=json), "id", endpoint)

    def _paginate(
        self,
        endpoint: Endpoint,
        ids: Mapping[str, str] | None = None,
        *,
        params: Mapping[str, str] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Yield ``result.elements`` page by page, following ``result.nextPage`` as given."""
        url = self._url(endpoint, ids)
        followed: set[str] = set()
        while True:
            envelope = self._request(endpoint, url, params=params)
            result = _result_of(envelope, endpoint)
            yield from result.get("elements") or []
            next_page = result.get("nextPage")
            if not next_page:
                return
            url = self._checked_next_page(str(next_page), endpoint)
            if url in followed:
                raise QualtricsError(
                    f"Qualtrics's nextPage repeated a page already read, after {len(followed) + 1} "
                    "page(s): stopped paging rather than loop forever",
                    method=endpoint.method,
                    endpoint=endpoint.path,
                )
            followed.add(url)
            params = None

    def _checked_next_page(self, next_page: str, endpoint: Endpoint) -> str:
        """``next_page`` unchanged, if it is on our host (or Qualtrics'): the token goes with it."""
        url = httpx.URL(next_page)
        base = self._http.base_url
        same_origin = (url.scheme, url.host, url.port) == (base.scheme, base.host, base.port)
        qualtrics = url.scheme == "https" and url.host.endswith(".qualtrics.com")
        if same_origin or qualtrics:
            return next_page
        raise QualtricsError(
            f"Qualtrics gave a nextPage on another host ({url.host or 'none'}); "
            "not sending the API token there",
            method=endpoint.method,
            endpoint=endpoint.path,
        )

    # --- transport, retries and errors ---

    def _url(self, endpoint: Endpoint, ids: Mapping[str, str] | None) -> str:
        values = {"directoryId": self.directory_id, **(ids or {})}
        quoted = {name: quote(value, safe="") for name, value in values.items()}
        return endpoint.path.format(**quoted)

    def _call(
        self, endpoint: Endpoint, ids: Mapping[str, str] | None = None, *, json: Any = None
    ) -> dict[str, Any]:
        return self._request(endpoint, self._url(endpoint, ids), json=json)

    def _request(
        self,
        endpoint: Endpoint,
        url: str,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """One logical call: attempts, backoff and the typed error when it is over."""
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self._send(endpoint, url, json=json, params=params, attempt=attempt)
            except httpx.TransportError as exc:
                delay = self._delay_after_transport_error(endpoint, exc, attempt)
            else:
                body = _json_body(response)
                if response.is_success:
                    return _success_body(response, body, endpoint)
                delay = self._delay_after_error_status(endpoint, response, body, attempt)
            logger.debug("%s: retrying in %.2fs", endpoint, delay)
            self._pause(delay, f"waiting to retry {endpoint.method} {endpoint.path}")

    def _send(
        self,
        endpoint: Endpoint,
        url: str,
        *,
        json: Any,
        params: Mapping[str, str] | None,
        attempt: int,
    ) -> httpx.Response:
        with self._throttle.slot(endpoint.key):
            self._check_guards()
            self._count(endpoint.key)
            try:
                response = self._answer(endpoint, url, json=json, params=params)
            except httpx.TransportError as exc:
                logger.debug("%s → %s (attempt %d)", endpoint, type(exc).__name__, attempt)
                self._note_outcome(endpoint.key, type(exc).__name__, attempt)
                raise
        logger.debug("%s → %d (attempt %d)", endpoint, response.status_code, attempt)
        self._note_outcome(endpoint.key, str(response.status_code), attempt)
        return response

    def _note_outcome(self, key: str, answer: str, attempt: int) -> None:
        with self._calls_lock:
            self.outcomes[key, answer] += 1
            if attempt > 1:
                self.retries[key] += 1

    def _answer(
        self, endpoint: Endpoint, url: str, *, json: Any, params: Mapping[str, str] | None
    ) -> httpx.Response:
        """One request and its whole body; the transport bounds its time by ``timeout``."""
        request = self._http.build_request(
            endpoint.method, url, json=json, params=params, extensions=self._last_check
        )
        try:
            return self._http.send(request)
        except httpx.DecodingError as exc:
            raise _CorruptAnswer(
                "Qualtrics answered with a body that could not be decoded (a broken "
                "Content-Encoding)",
                request=request,
            ) from exc

    def _check_guards(self) -> None:
        """Every guard of this thread (``guarded_by``): checked before a request's slot is
        used, and again by the transport just before its first byte goes out."""
        for check in self._guards.stack:
            check()

    @property
    def _last_check(self) -> dict[str, Any]:
        return {BEFORE_SEND: self._check_guards} if self._guards.stack else {}

    def _count(self, key: str) -> None:
        tallies = {id(calls): calls for calls in self._tallies.stack}  # each Counter once
        with self._calls_lock:
            self.calls[key] += 1
            for calls in tallies.values():
                calls[key] += 1

    def _delay_after_transport_error(
        self, endpoint: Endpoint, exc: httpx.TransportError, attempt: int
    ) -> float:
        """Seconds to wait before retrying, or raise the typed error."""
        if not endpoint.idempotent and not was_not_sent(exc):
            raise OutcomeUnknown(
                f"{endpoint.method} got no answer ({type(exc).__name__}) and may have taken "
                "effect: look up what it would have created before trying again",
                method=endpoint.method,
                endpoint=endpoint.path,
            ) from exc
        if attempt > self.retry_policy.max_retries:
            error_type: type[QualtricsError] = (
                QualtricsTimeout
                if isinstance(exc, httpx.TimeoutException)
                else QualtricsError
                if isinstance(exc, _CorruptAnswer)
                else QualtricsUnreachable
            )
            detail = str(exc) if isinstance(exc, _OWN_TRANSPORT_ERRORS) else type(exc).__name__
            raise error_type(
                f"{(error_type.__doc__ or '').strip()} ({detail}, {attempt} attempt(s))",
                method=endpoint.method,
                endpoint=endpoint.path,
            ) from exc
        return self.retry_policy.backoff(attempt - 1, self._rng)

    def _delay_after_error_status(
        self, endpoint: Endpoint, response: httpx.Response, body: Any, attempt: int
    ) -> float:
        """Seconds to wait before retrying, or raise the typed error."""
        status = response.status_code
        if not endpoint.idempotent and status >= 500:
            raise self._status_error(
                OutcomeUnknown,
                response,
                body,
                endpoint,
                message=f"{endpoint.method} got HTTP {status} and may have taken effect: "
                "look up what it would have created before trying again",
            )
        if not is_retryable_status(status) or attempt > self.retry_policy.max_retries:
            raise self._status_error(_error_type(status), response, body, endpoint)
        wait = retry_after(response, body, self._clock.now())
        if wait is None:
            return self.retry_policy.backoff(attempt - 1, self._rng)
        if wait > self.retry_policy.max_retry_after:
            raise self._status_error(
                _error_type(status),
                response,
                body,
                endpoint,
                message=f"Qualtrics asked us to wait {wait:g}s before retrying, longer than "
                f"the {self.retry_policy.max_retry_after:g}s we wait: try again later",
            )
        return wait

    def _status_error(
        self,
        error_type: type[QualtricsError],
        response: httpx.Response,
        body: Any,
        endpoint: Endpoint,
        *,
        message: str | None = None,
    ) -> QualtricsError:
        meta = _object(body, "meta")
        error = _object(meta, "error")
        return error_type(
            message,
            status_code=response.status_code,
            error_code=self._redacted(error.get("errorCode")),
            error_message=self._redacted(error.get("errorMessage")),
            request_id=self._redacted(meta.get("requestId")),
            method=endpoint.method,
            endpoint=endpoint.path,
        )

    def _redacted(self, value: Any) -> str | None:
        """``value`` as text with the token blanked out, in case Qualtrics ever echoes it."""
        if value is None:
            return None
        return str(value).replace(self._token, "[token]") if self._token else str(value)


@dataclass(frozen=True)
class ListLookup:
    """What ``find_mailing_list`` found: the id, or None after ``seen`` lists."""

    mailing_list_id: str | None
    seen: int

    @property
    def capped(self) -> bool:
        """Not found, and the listing showed as many lists as it ever shows: inconclusive."""
        return self.mailing_list_id is None and self.seen >= MAILING_LIST_LISTING_CAP


def proxied_host(notice: str) -> str | None:
    """The host a "Request proxied … use this host instead: X" notice names, or None."""
    match = PROXIED_NOTICE.search(notice)
    return match.group(1).rstrip(".") if match else None


def survey_active(survey: Mapping[str, Any]) -> bool | None:
    """Whether a ``get_survey`` answer says the survey takes distributions: its ``isActive``,
    or None when Qualtrics did not say (absent, or not a boolean)."""
    active = survey.get("isActive")
    return active if isinstance(active, bool) else None


_DOUBLED_SLASHES = re.compile(r"(?<!:)/{2,}")


def normal_link(url: str) -> str:
    """``url`` with doubled slashes in its path made single (``…qualtrics.com//jfe/form/…``
    has been seen); the scheme's ``//`` and the query string are left alone."""
    head, separator, query = url.partition("?")
    scheme, colon, rest = head.partition("://")
    if not colon:
        return url
    return f"{scheme}://{_DOUBLED_SLASHES.sub('/', rest)}{separator}{query}"


def _error_type(status: int) -> type[QualtricsError]:
    if status in (401, 403):
        return AuthError
    if status == 404:
        return NotFound
    if status == 429:
        return RateLimited
    if status >= 500:
        return ServerError
    if 400 <= status < 500:
        return BadRequest
    return QualtricsError


def _json_body(response: httpx.Response) -> Any:
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        return None


def _object(parent: Any, key: str) -> dict[str, Any]:
    """``parent[key]`` when both are JSON objects, else an empty one."""
    value = parent.get(key) if isinstance(parent, dict) else None
    return value if isinstance(value, dict) else {}


def _success_body(response: httpx.Response, body: Any, endpoint: Endpoint) -> dict[str, Any]:
    if isinstance(body, dict):
        return body
    if not response.content:
        return {}
    raise QualtricsError(
        "Qualtrics answered with something other than a JSON envelope",
        status_code=response.status_code,
        method=endpoint.method,
        endpoint=endpoint.path,
    )


def _result_of(envelope: dict[str, Any], endpoint: Endpoint) -> dict[str, Any]:
    result = envelope.get("result")
    if not isinstance(result, dict):
        raise QualtricsError(
            "Qualtrics answered without the expected result object",
            method=endpoint.method,
            endpoint=endpoint.path,
        )
    return result


def _required_str(result: Mapping[str, Any], key: str, endpoint: Endpoint) -> str:
    value = result.get(key)
    if not isinstance(value, str) or not value:
        raise QualtricsError(
            f"Qualtrics answered without result.{key}",
            method=endpoint.method,
            endpoint=endpoint.path,
        )
    return value


def _proxy_mounts(timeout: float) -> dict[str, httpx.BaseTransport | None]:
    """The proxies the environment names, or one ConfigError naming the variables (never the
    proxy's URL, which may carry a password) when httpx cannot use one."""
    try:
        return environment_mounts(timeout)
    except (ValueError, RuntimeError, ImportError) as exc:
        raise ConfigError(
            "a proxy named by HTTP_PROXY, HTTPS_PROXY or ALL_PROXY cannot be used "
            f"({type(exc).__name__}; a socks5:// proxy needs the socksio package): fix or unset it"
        ) from None


def required_id(result: Mapping[str, Any], key: str, endpoint: Endpoint) -> str:
    """``result[key]``, an id Qualtrics answered (``QUALTRICS_ID``), or a ``QualtricsError``."""
    value = _required_str(result, key, endpoint)
    if not is_qualtrics_id(value):
        raise QualtricsError(
            f"Qualtrics answered a result.{key} that is not an id (letters, digits, _ and - "
            "only): linkpool does not store it",
            method=endpoint.method,
            endpoint=endpoint.path,
        )
    return value


def _optional_str(result: Mapping[str, Any], key: str) -> str | None:
    value = result.get(key)
    return str(value) if value is not None else None


def _unprocessed(result: Mapping[str, Any]) -> list[int | None]:
    """The 202's ``contacts.unprocessed``: indexes, or objects (with an ``index`` if any)."""
    contacts = result.get("contacts")
    entries = contacts.get("unprocessed") if isinstance(contacts, dict) else None
    return [_index_of(entry) for entry in entries or []]


def _index_of(entry: Any) -> int | None:
    if isinstance(entry, dict):
        entry = entry.get("index", entry.get("contactIndex"))
    if isinstance(entry, int | str) and str(entry).isdigit():
        return int(entry)
    return None


def _progress(result: Mapping[str, Any]) -> JobProgress:
    file_id = result.get("fileId")
    return JobProgress(
        status=str(result.get("status") or "inProgress"),
        percent_complete=float(result.get("percentComplete") or 0),
        file_id=str(file_id) if file_id else None,
    )
