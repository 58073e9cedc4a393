"""``Simulator``: an in-memory Qualtrics brand as a WSGI application."""

from __future__ import annotations

import collections
import hmac
import math
import random
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import httpx

from linkpool.clock import Clock, SystemClock
from linkpool.qualtrics.client import QualtricsClient
from linkpool.qualtrics.throttle import TokenBucket
from linkpool.simulator.admin import (
    ADMIN_PREFIX,
    faults_from_json,
    faults_to_json,
    link_url,
)
from linkpool.simulator.api import ApiHandlers
from linkpool.simulator.faults import Faults
from linkpool.simulator.fidelity import PROXIED_NOTICE, Fidelity
from linkpool.simulator.http import (
    API_PREFIX,
    ApiError,
    JsonObject,
    Request,
    Response,
    Route,
    failure,
    find_route,
    not_found,
)
from linkpool.simulator.responses import ResponseHandlers
from linkpool.simulator.state import Brand, Distribution, MailingList, SurveyResponse

StartResponse = Callable[..., Any]

DEFAULT_TOKEN = "sim-token"
DEFAULT_DIRECTORY_ID = "POOL_SimDirectory01"
DEFAULT_SURVEY_ID = "SV_SimSurvey0001"
DEFAULT_LINKS_PAGE_SIZE = 100


@dataclass(frozen=True)
class LinkCheck:
    """What a respondent sees on opening a link: ``ok``, or why not (``reason``)."""

    ok: bool
    reason: str


class Simulator(ApiHandlers, ResponseHandlers):
    """An in-memory Qualtrics: one brand, one XM directory, the endpoints linkpool calls.

    Call it as a WSGI app, mount it with ``transport()``, or serve it over HTTP with
    ``linkpool.simulator.running`` or ``run_server``. Time comes from ``clock``; ids, link lag and faults
    from a ``random.Random`` seeded with ``seed``. Thread-safe: one lock guards all state.
    """

    def __init__(
        self,
        *,
        token: str = DEFAULT_TOKEN,
        directory_id: str = DEFAULT_DIRECTORY_ID,
        surveys: Iterable[str] = (DEFAULT_SURVEY_ID,),
        clock: Clock | None = None,
        datacenter: str = "sim1",
        links_page_size: int = DEFAULT_LINKS_PAGE_SIZE,
        seed: int = 0,
        fidelity: Fidelity | None = None,
    ) -> None:
        self.token = token
        self.directory_id = directory_id
        self.datacenter = datacenter
        self.clock: Clock = clock or SystemClock()
        self.base_url = f"http://{datacenter}.qualtrics.localhost{API_PREFIX}"
        self.links_page_size = links_page_size
        self.import_polls = 3
        """How many status polls an import takes to reach 100 percent."""
        self.faults = Faults()
        self.fidelity = fidelity or Fidelity()
        self.fault_random = random.Random(f"faults:{seed}")
        self.brand = Brand(directory_id=directory_id, datacenter=datacenter, seed=seed)
        self.calls: collections.Counter[str] = collections.Counter()
        self._routes = self.routes()
        self._bucket: TokenBucket | None = None
        self._lock = threading.RLock()
        for survey_id in surveys:
            self.add_survey(survey_id)

    def routes(self) -> list[Route]:
        return super().routes() + self.response_routes()

    # --- WSGI -------------------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        latency = self.faults.latency
        if latency > 0:
            time.sleep(latency)
        request = Request.from_environ(environ)
        with self._lock:
            response = self.handle(request)
        status, headers, payload = response.render()
        start_response(status, headers)
        return [payload]

    def handle(self, request: Request) -> Response:
        try:
            if request.path.startswith(ADMIN_PREFIX + "/"):
                self.authenticate(request)
                return self.ok(self.administer(request))
            if not request.path.startswith(API_PREFIX + "/"):
                raise not_found("The requested resource does not exist.", "RP_0.4")
            request.path = request.path[len(API_PREFIX) :]
            route, request.params = find_route(self._routes, request.method, request.path)
            self.calls[route.key] += 1
            self.inject_faults()
            self.authenticate(request)
            self.refuse_if_proxied(request)
            response = route.handler(request)
        except ApiError as error:
            return self.noted(failure(error, self.brand.request_id()))
        if request.method == "POST" and self.draw(self.faults.lost_response_rate):
            return failure(
                ApiError(504, "Gateway timeout.", "GATEWAY_TIMEOUT"), response_id(response)
            )
        return self.noted(response)

    def refuse_if_proxied(self, request: Request) -> None:
        """A wrong datacenter: GETs are proxied, POSTs refused (as users report)."""
        if self.fidelity.proxied_to and request.method == "POST":
            raise ApiError(400, "Request proxied to another datacenter.", "RP_0.5")

    def noted(self, response: Response) -> Response:
        """``response`` with the configured ``meta.notice``, if any."""
        notice = self.fidelity.notice
        if self.fidelity.proxied_to:
            notice = PROXIED_NOTICE.format(host=self.fidelity.proxied_to)
        if notice:
            response.body["meta"]["notice"] = notice
        return response

    def administer(self, request: Request) -> JsonObject:
        """``/_simulator/faults`` (GET, PUT), ``/_simulator/open-link`` and ``…/respond`` (POST)."""
        action = (request.method, request.path[len(ADMIN_PREFIX) :])
        if action == ("PUT", "/faults"):
            self.faults = faults_from_json(self.faults, request.json_object())
        elif action in (("POST", "/open-link"), ("POST", "/respond")):
            url = link_url(request)
            check = self._open(url)
            if action[1] == "/respond" and check.ok:
                self._record_response(url)
            return {"ok": check.ok, "reason": check.reason}
        elif action != ("GET", "/faults"):
            raise not_found("No such simulator control.", "RP_0.4")
        return faults_to_json(self.faults)

    def authenticate(self, request: Request) -> None:
        token = request.headers.get("x-api-token")
        if token is None:
            raise ApiError(400, "Expected authorization in headers, but none provided.", "ATP_2")
        if not hmac.compare_digest(token.encode(), self.token.encode()):
            raise ApiError(401, "Unrecognized X-API-TOKEN.", "AUTH_1.1")

    def inject_faults(self) -> None:
        limit = self.faults.rate_limit_per_minute
        if limit is None:
            self._bucket = None
        else:
            if self._bucket is None or self._bucket.requests_per_minute != limit:
                self._bucket = TokenBucket(limit, self.clock)
            due = self._bucket.try_take()
            if due:
                wait = max(1, math.ceil(due))
                raise ApiError(
                    429,
                    "Too many requests: the rate limit was exceeded.",
                    "TOO_MANY_REQUESTS",
                    headers={"Retry-After": str(wait)},
                    extra={"retryAfter": wait},
                )
        if self.draw(self.faults.error_rate):
            status = self.fault_random.choice((500, 503))
            raise ApiError(status, "The service failed; try again later.", f"SERVER_{status}")

    def draw(self, rate: float) -> bool:
        """A seeded coin toss that comes up ``True`` with probability ``rate``."""
        return rate > 0 and self.fault_random.random() < rate

    def transport(self) -> httpx.WSGITransport:
        return httpx.WSGITransport(app=self)

    def client(self, **kwargs: Any) -> QualtricsClient:
        """A ``QualtricsClient`` wired to this simulator (transport, token, clock)."""
        options: dict[str, Any] = {
            "base_url": self.base_url,
            "token": self.token,
            "directory_id": self.directory_id,
            "transport": self.transport(),
            "clock": self.clock,
        }
        options.update(kwargs)
        return QualtricsClient(**options)

    # --- surveys ----------------------------------------------------------------------------

    def add_survey(self, survey_id: str, *, active: bool = True) -> None:
        with self._lock:
            self.brand.surveys[survey_id] = active

    def set_survey_active(self, survey_id: str, active: bool) -> None:
        with self._lock:
            if survey_id not in self.brand.surveys:
                raise KeyError(f"no survey {survey_id!r} in the simulator")
            self.brand.surveys[survey_id] = active

    # --- the respondent's view --------------------------------------------------------------

    def open_link(self, url: str) -> LinkCheck:
        """The respondent opens ``url``: whether the survey opens now. Does not use the link
        up, but the first open that succeeds takes the response's snapshot of the contact's
        embedded data: what is written onto the contact after it never reaches the response."""
        with self._lock:
            return self._open(url)

    def check_link(self, url: str) -> LinkCheck:
        """Whether ``url`` would open now, without opening it (no snapshot)."""
        with self._lock:
            return self._check(url)

    def respond(self, url: str, *, finished: bool = True) -> LinkCheck:
        """Take the survey through ``url`` (opening it first if it was not): uses the link up
        and records a response with the snapshot taken at the first open, one the export then
        returns (``finished=False`` for one closed incomplete)."""
        with self._lock:
            check = self._open(url)
            if check.ok:
                self._record_response(url, finished=finished)
            return check

    def _open(self, url: str) -> LinkCheck:
        check = self._check(url)
        link = self.brand.links.get(url)
        if check.ok and link is not None and link.snapshot is None:
            contact = self.brand.contacts[link.contact_id]
            link.snapshot = dict(contact.fields.get("embeddedData", {}))
            link.opened_at = self.clock.now()
        return check

    def _record_response(self, url: str, *, finished: bool = True) -> None:
        link = self.brand.links[url]
        link.used = True
        contact = self.brand.contacts[link.contact_id]
        now = self.clock.now()
        self.brand.responses.append(
            SurveyResponse(
                distribution_id=link.distribution_id,
                contact_id=link.contact_id,
                embedded_data={name: str(value) for name, value in (link.snapshot or {}).items()},
                recorded_at=now,
                opened_at=link.opened_at or now,
                id=self.brand.new_id("R_"),
                survey_id=self.brand.distributions[link.distribution_id].survey_id,
                ext_ref=contact.ext_ref,
                finished=finished,
            )
        )

    def _check(self, url: str) -> LinkCheck:
        link = self.brand.links.get(url)
        if link is None:
            return LinkCheck(False, "unknown")
        distribution = self.brand.distributions[link.distribution_id]
        if distribution.deleted:
            return LinkCheck(False, "distribution deleted")
        if self.brand.mailing_lists[distribution.mailing_list_id].deleted:
            return LinkCheck(False, "list deleted")
        if self.brand.contacts[link.contact_id].deleted:
            return LinkCheck(False, "contact deleted")
        if self.clock.now() >= distribution.expires_at:
            return LinkCheck(False, "expired")
        if link.used:
            return LinkCheck(False, "already used")
        if link.exceeded_contact_frequency:
            return LinkCheck(False, "contact frequency exceeded")
        return LinkCheck(True, "ok")

    # --- inspection for tests ---------------------------------------------------------------

    def mailing_lists(self) -> dict[str, dict[str, Any]]:
        """Live mailing lists: id -> name, contacts (directory contact ids), dates."""
        with self._lock:
            return {m.id: _list_view(m) for m in self.brand.mailing_lists.values() if not m.deleted}

    def deleted_mailing_lists(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {m.id: _list_view(m) for m in self.brand.mailing_lists.values() if m.deleted}

    def distributions(self) -> dict[str, dict[str, Any]]:
        """Live distributions: id -> surveyId, mailingListId, description, expirationDate…"""
        with self._lock:
            return {
                d.id: _distribution_view(d)
                for d in self.brand.distributions.values()
                if not d.deleted
            }

    def deleted_distributions(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {
                d.id: _distribution_view(d) for d in self.brand.distributions.values() if d.deleted
            }

    def links(self, distribution_id: str) -> list[str]:
        """Every link URL of a distribution (deleted or not), ignoring ``link_lag``."""
        with self._lock:
            return [link.url for link in self.brand.distributions[distribution_id].links]

    def contact_ids(self) -> list[str]:
        """The directory's live contacts (``CID_…``; deleted ones left out)."""
        with self._lock:
            return [c.id for c in self.brand.contacts.values() if not c.deleted]

    def contact(self, contact_id: str) -> dict[str, Any]:
        """A directory contact: its fields, ``embeddedData`` and whether it was deleted."""
        with self._lock:
            contact = self.brand.contacts[contact_id]
            return {
                "id": contact.id,
                **contact.fields,
                "embeddedData": dict(contact.fields.get("embeddedData", {})),
                "deleted": contact.deleted,
            }

    def responses(self) -> list[SurveyResponse]:
        """Survey responses taken through ``respond``, each with its embedded-data snapshot."""
        with self._lock:
            return list(self.brand.responses)


def response_id(response: Response) -> str:
    return str(response.body["meta"]["requestId"])


def _list_view(mailing_list: MailingList) -> dict[str, Any]:
    return {
        "id": mailing_list.id,
        "name": mailing_list.name,
        "contacts": list(mailing_list.members),
        "lookupIds": dict(mailing_list.members),
        "creationDate": mailing_list.created,
        "lastModifiedDate": mailing_list.modified,
    }


def _distribution_view(distribution: Distribution) -> dict[str, Any]:
    return {
        "id": distribution.id,
        "surveyId": distribution.survey_id,
        "mailingListId": distribution.mailing_list_id,
        "description": distribution.description,
        "expirationDate": distribution.expires_at,
        "createdDate": distribution.created,
        "links": len(distribution.links),
    }
