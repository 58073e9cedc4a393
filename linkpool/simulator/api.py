"""The endpoints: one handler per call linkpool makes, as strict as the real API.

``ApiHandlers`` is mixed into ``Simulator``, which provides the brand, the clock, the faults
and the lock (held around every handler).
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from linkpool.clock import Clock
from linkpool.config import MAX_EMBEDDED_NAME, MAX_EMBEDDED_VALUE
from linkpool.qualtrics import endpoints as api
from linkpool.qualtrics.endpoints import (
    MAX_CONTACTS_PAGE_SIZE,
    MAX_IMPORT_BYTES,
    MAX_IMPORT_CONTACTS,
    Endpoint,
)
from linkpool.simulator.faults import Faults
from linkpool.simulator.fidelity import Fidelity
from linkpool.simulator.http import (
    Handler,
    JsonObject,
    Request,
    Response,
    Route,
    bad_request,
    not_found,
    page_size,
    paginate,
    reject_nulls,
    reject_unknown_keys,
    require_keys,
    require_string,
    success,
)
from linkpool.simulator.state import (
    CONTACT_FIELDS,
    IMPORT_CONTACT_FIELDS,
    Brand,
    Contact,
    Distribution,
    ImportJob,
    Link,
    MailingList,
    timestamp,
)

LISTS_MAX_PAGE_SIZE = 100
DISTRIBUTIONS_MAX_PAGE_SIZE = 100
DISTRIBUTION_KEYS = (
    "surveyId",
    "linkType",
    "description",
    "action",
    "expirationDate",
    "mailingListId",
)
_STRING_FIELDS = ("firstName", "lastName", "email", "phone", "extRef", "language")

GET_CONTACT = Endpoint("GET", api.UPDATE_CONTACT.path)
"""The one endpoint served that the client does not call (tests read a member with it)."""


class ApiHandlers:
    brand: Brand
    clock: Clock
    faults: Faults
    fault_random: random.Random
    links_page_size: int
    import_polls: int
    fidelity: Fidelity

    def routes(self) -> list[Route]:
        """The client's endpoints (``linkpool.qualtrics.endpoints``), each with its handler."""
        handlers: list[tuple[Endpoint, Handler]] = [
            (api.WHOAMI, self.whoami),
            (api.CREATE_MAILING_LIST, self.create_mailing_list),
            (api.LIST_MAILING_LISTS, self.list_mailing_lists),
            (api.GET_MAILING_LIST, self.get_mailing_list),
            (api.DELETE_MAILING_LIST, self.delete_mailing_list),
            (api.LIST_CONTACTS, self.list_contacts),
            (GET_CONTACT, self.get_contact),
            (api.UPDATE_CONTACT, self.update_contact),
            (api.DELETE_CONTACT, self.remove_contact),
            (api.DELETE_DIRECTORY_CONTACT, self.delete_directory_contact),
            (api.START_IMPORT, self.start_import),
            (api.GET_IMPORT, self.get_import),
            (api.CREATE_DISTRIBUTION, self.create_distribution),
            (api.LIST_DISTRIBUTIONS, self.list_distributions),
            (api.GET_DISTRIBUTION, self.get_distribution),
            (api.DELETE_DISTRIBUTION, self.delete_distribution),
            (api.LIST_LINKS, self.list_links),
            (api.GET_SURVEY, self.get_survey),
        ]
        return [Route(endpoint.method, endpoint.path, handler) for endpoint, handler in handlers]

    def ok(self, result: JsonObject | None = None, status: int = 200) -> Response:
        return success(result, self.brand.request_id(), status)

    # --- lookups that answer 404 ------------------------------------------------------------

    def directory(self, request: Request) -> None:
        if request.params["directoryId"] != self.brand.directory_id:
            raise not_found(f"Directory not found: {request.params['directoryId']}")

    def mailing_list(self, request: Request) -> MailingList:
        self.directory(request)
        mailing_list = self.brand.live_list(request.params["mailingListId"])
        if mailing_list is None:
            raise not_found(f"Mailing list not found: {request.params['mailingListId']}")
        return mailing_list

    def member(self, request: Request) -> tuple[MailingList, Contact]:
        mailing_list = self.mailing_list(request)
        contact_id = request.params["contactId"]
        contact = self.brand.live_contact(contact_id)
        if contact is None or contact_id not in mailing_list.members:
            raise not_found(f"Contact not found in this mailing list: {contact_id}")
        return mailing_list, contact

    def distribution(self, request: Request) -> Distribution:
        distribution = self.brand.distributions.get(request.params["distributionId"])
        if distribution is None or distribution.deleted:
            raise not_found(f"Distribution not found: {request.params['distributionId']}")
        return distribution

    # --- whoami -----------------------------------------------------------------------------

    def whoami(self, request: Request) -> Response:
        return self.ok(
            {
                "brandId": "linkpool-sim",
                "userId": self.brand.user_id,
                "userName": "simulator#linkpool-sim",
                "accountType": "UT_BRANDADMIN",
                "firstName": "Simulated",
                "lastName": "User",
                "email": "simulator@example.invalid",
                "datacenter": self.brand.datacenter,
            }
        )

    # --- mailing lists ----------------------------------------------------------------------

    def create_mailing_list(self, request: Request) -> Response:
        self.directory(request)
        body = request.json_object()
        reject_unknown_keys(body, ("name", "ownerId", "prioritizeListMetadata"))
        reject_nulls(body)
        require_keys(body, ("name",))
        name = require_string(body, "name")
        now = self.clock.now()
        owner_id = body.get("ownerId", self.brand.user_id)
        mailing_list = MailingList(self.brand.new_id("CG_"), name, owner_id, now, now)
        self.brand.mailing_lists[mailing_list.id] = mailing_list
        return self.ok({"id": mailing_list.id})

    def list_mailing_lists(self, request: Request) -> Response:
        self.directory(request)
        size = page_size(request, default=LISTS_MAX_PAGE_SIZE, maximum=LISTS_MAX_PAGE_SIZE)
        include_count = request.query.get("includeCount", "false").lower() == "true"
        live = [m for m in self.brand.mailing_lists.values() if not m.deleted]
        shown = live[: self.fidelity.listing_cap]  # "only 10,000 at a time": the oldest
        return self.ok(
            paginate(
                request,
                shown,
                size,
                keep=("includeCount",),
                render=lambda m: m.as_element(include_count=include_count),
            )
        )

    def get_mailing_list(self, request: Request) -> Response:
        mailing_list = self.mailing_list(request)
        include_count = request.query.get("includeCount", "false").lower() == "true"
        self.run_pending_imports(mailing_list)
        return self.ok(mailing_list.as_element(include_count=include_count))

    def run_pending_imports(self, mailing_list: MailingList) -> None:
        """An import runs on Qualtrics whether or not anyone polls it: each read of its list
        moves it on as a poll would, so an import whose answer was lost still completes."""
        for job in list(self.brand.imports.values()):
            if job.mailing_list_id == mailing_list.id and not job.complete:
                job.polls += 1
                if job.polls >= self.import_polls:
                    self.apply_import(job, mailing_list)

    def delete_mailing_list(self, request: Request) -> Response:
        self.mailing_list(request).deleted = True
        return self.ok()

    # --- contacts in a list -----------------------------------------------------------------

    def list_contacts(self, request: Request) -> Response:
        mailing_list = self.mailing_list(request)
        size = page_size(request, default=MAX_CONTACTS_PAGE_SIZE, maximum=MAX_CONTACTS_PAGE_SIZE)
        elements = [
            self.member_element(mailing_list, self.brand.contacts[contact_id])
            for contact_id in mailing_list.members
        ]
        return self.ok(paginate(request, elements, size))

    def member_element(self, mailing_list: MailingList, contact: Contact) -> JsonObject:
        return {
            **contact.as_element(),
            "contactLookupId": mailing_list.members[contact.id],
            "mailingListUnsubscribed": False,
        }

    def get_contact(self, request: Request) -> Response:
        return self.ok(self.member_element(*self.member(request)))

    def update_contact(self, request: Request) -> Response:
        mailing_list, contact = self.member(request)
        body = request.json_object()
        reject_unknown_keys(body, CONTACT_FIELDS)
        reject_nulls(body)
        problem = contact_problem(body)
        if problem:
            raise bad_request(problem)
        ext_ref = body.get("extRef")
        if ext_ref and ext_ref != contact.ext_ref:
            if ext_ref in self.brand.contacts_by_ext_ref:
                raise bad_request(f"Another contact already has extRef {ext_ref!r}.")
            self.brand.contacts_by_ext_ref.pop(contact.ext_ref or "", None)
            self.brand.contacts_by_ext_ref[ext_ref] = contact.id
        contact.update(body)
        mailing_list.modified = self.clock.now()
        return self.ok()

    def remove_contact(self, request: Request) -> Response:
        mailing_list, contact = self.member(request)
        del mailing_list.members[contact.id]
        mailing_list.modified = self.clock.now()
        return self.ok()

    def delete_directory_contact(self, request: Request) -> Response:
        self.directory(request)
        contact = self.brand.live_contact(request.params["contactId"])
        if contact is None:
            raise not_found(f"Contact not found: {request.params['contactId']}")
        self.brand.delete_contact(contact)
        return self.ok()

    # --- bulk import ------------------------------------------------------------------------

    def start_import(self, request: Request) -> Response:
        mailing_list = self.mailing_list(request)
        if len(request.body) > MAX_IMPORT_BYTES:
            raise bad_request(
                f"Request body too large: an import is at most {MAX_IMPORT_BYTES} bytes."
            )
        body = request.json_object()
        reject_unknown_keys(body, ("contacts", "transactionMeta"))
        require_keys(body, ("contacts",))
        contacts = body["contacts"]
        if not isinstance(contacts, list) or not contacts:
            raise bad_request("Invalid value for contacts: expected a non-empty array.")
        if len(contacts) > MAX_IMPORT_CONTACTS:
            raise bad_request(
                f"Too many contacts: an import is at most {MAX_IMPORT_CONTACTS} contacts."
            )
        reject_nulls(body)
        for index, contact in enumerate(contacts):
            if not isinstance(contact, dict):
                raise bad_request(f"Invalid value for contacts[{index}]: expected an object.")
            reject_unknown_keys(contact, IMPORT_CONTACT_FIELDS, where=f"contacts[{index}].")
        problems = {index: contact_problem(c) for index, c in enumerate(contacts)}
        unprocessed = [index for index, problem in problems.items() if problem]
        accepted = [
            {key: value for key, value in c.items() if key != "transactionData"}
            for index, c in enumerate(contacts)
            if not problems[index]
        ]
        job = ImportJob(self.brand.new_id("PGRS_"), mailing_list.id, accepted, unprocessed)
        rate = self.faults.import_failure_rate
        job.fails = rate > 0 and self.fault_random.random() < rate
        self.brand.imports[job.id] = job
        tracking = f"{request.root_url}{request.path}/{job.id}"
        refused: list[Any] = list(unprocessed)
        if self.fidelity.unprocessed_as_objects:
            refused = [{"index": index, "reason": problems[index]} for index in unprocessed]
        return self.ok(
            {"id": job.id, "contacts": {"unprocessed": refused}, "tracking": {"url": tracking}},
            status=202,
        )

    def get_import(self, request: Request) -> Response:
        mailing_list = self.mailing_list(request)
        job = self.brand.imports.get(request.params["importId"])
        if job is None or job.mailing_list_id != mailing_list.id:
            raise not_found(f"Import not found: {request.params['importId']}")
        job.polls += 1
        if job.fails:
            status = "failed"  # nothing imported; the wait must end now
        elif not job.complete and job.polls >= self.import_polls:
            self.apply_import(job, mailing_list)
        if not job.fails:
            status = "complete" if job.complete else "inProgress"
        percent = 100.0 if job.complete else round(100.0 * job.polls / self.import_polls, 1)
        return self.ok(
            {
                "id": job.id,
                "status": status,
                "percentComplete": min(percent, 100.0) if not job.fails else 0.0,
                "contacts": {
                    "count": {"added": job.added, "updated": job.updated, "failed": job.failed},
                },
            }
        )

    def apply_import(self, job: ImportJob, mailing_list: MailingList) -> None:
        for fields in job.contacts:
            contact, created = self.brand.upsert_contact(fields)
            if created:
                job.added += 1
            else:
                job.updated += 1
            if contact.id not in mailing_list.members:
                mailing_list.members[contact.id] = self.brand.new_id("CGC_")
        job.contacts = []
        job.complete = True
        mailing_list.modified = self.clock.now()

    # --- distributions ----------------------------------------------------------------------

    def create_distribution(self, request: Request) -> Response:
        body = request.json_object()
        reject_unknown_keys(body, DISTRIBUTION_KEYS)
        reject_nulls(body)
        require_keys(body, DISTRIBUTION_KEYS)
        survey_id = require_string(body, "surveyId")
        if body["linkType"] != "Individual":
            raise bad_request("Invalid value for linkType: the simulator makes Individual links.")
        if body["action"] != "CreateDistribution":
            raise bad_request("Invalid value for action: expected CreateDistribution.")
        description = require_string(body, "description")
        expires_at = parse_expiration(body["expirationDate"], self.fidelity.zone)
        now = self.clock.now()
        if expires_at <= now:
            raise bad_request("Invalid value for expirationDate: it must be in the future.")
        if survey_id not in self.brand.surveys:
            raise not_found(f"Survey not found: {survey_id}")
        if not self.brand.surveys[survey_id]:
            raise bad_request(f"Survey {survey_id} is not active.", "GS_5")
        mailing_list = self.brand.live_list(require_string(body, "mailingListId"))
        if mailing_list is None:
            raise not_found(f"Mailing list not found: {body['mailingListId']}")
        if not mailing_list.members:
            raise bad_request(f"Mailing list {mailing_list.id} has no contacts.")
        distribution = Distribution(
            id=self.brand.new_id("EMD_"),
            survey_id=survey_id,
            mailing_list_id=mailing_list.id,
            description=description,
            expires_at=expires_at,
            created=now,
            owner_id=self.brand.user_id,
        )
        for contact_id, lookup_id in mailing_list.members.items():
            self.add_link(distribution, contact_id, lookup_id)
        self.brand.distributions[distribution.id] = distribution
        return self.ok({"id": distribution.id})

    def add_link(self, distribution: Distribution, contact_id: str, lookup_id: str) -> None:
        rate = self.faults.exceeded_contact_frequency_rate
        link = Link(
            url=self.brand.link_url(distribution.survey_id, distribution.id, lookup_id),
            distribution_id=distribution.id,
            contact_id=contact_id,
            lookup_id=lookup_id,
            transaction_id=self.brand.new_id("CTR_"),
            exceeded_contact_frequency=rate > 0 and self.fault_random.random() < rate,
            lag_draw=self.brand.random.random(),
        )
        distribution.links.append(link)
        self.brand.links[link.url] = link

    def list_distributions(self, request: Request) -> Response:
        survey_id = required_query(request, "surveyId")
        size = page_size(
            request, default=DISTRIBUTIONS_MAX_PAGE_SIZE, maximum=DISTRIBUTIONS_MAX_PAGE_SIZE
        )
        elements = [
            distribution.as_element()
            for distribution in self.brand.distributions.values()
            if distribution.survey_id == survey_id and not distribution.deleted
        ]
        return self.ok(paginate(request, elements, size, keep=("surveyId",)))

    def get_distribution(self, request: Request) -> Response:
        return self.ok(self.distribution(request).as_element())

    def delete_distribution(self, request: Request) -> Response:
        self.distribution(request).deleted = True
        return self.ok()

    def list_links(self, request: Request) -> Response:
        survey_id = required_query(request, "surveyId")
        distribution = self.distribution(request)
        if distribution.survey_id != survey_id:
            raise not_found(f"Distribution {distribution.id} not found for survey {survey_id}")
        lagging = self.lagging_fraction(distribution)
        elements = [
            self.link_element(distribution, link)
            for link in distribution.links
            if link.lag_draw >= lagging
        ]
        return self.ok(paginate(request, elements, self.links_page_size, keep=("surveyId",)))

    def lagging_fraction(self, distribution: Distribution) -> float:
        lag = self.faults.link_lag
        if lag is None or self.clock.now() >= distribution.created + lag:
            return 0.0
        return self.faults.link_lag_fraction

    def link_element(self, distribution: Distribution, link: Link) -> JsonObject:
        fields = self.brand.contacts[link.contact_id].fields
        url = link.url
        if self.fidelity.doubled_slash_links:
            url = url.replace(".qualtrics.com/", ".qualtrics.com//", 1)
        listed_id = (
            link.lookup_id if self.fidelity.links_contact_id == "lookup" else link.contact_id
        )
        return {
            "contactId": listed_id,
            "transactionId": link.transaction_id,
            "link": url,
            "linkExpiration": timestamp(distribution.expires_at),
            "exceededContactFrequency": link.exceeded_contact_frequency,
            "status": "Email not sent",
            "firstName": fields.get("firstName"),
            "lastName": fields.get("lastName"),
            "externalDataReference": fields.get("extRef"),
            "email": fields.get("email"),
            "unsubscribed": bool(fields.get("unsubscribed", False)),
        }

    # --- surveys ----------------------------------------------------------------------------

    def get_survey(self, request: Request) -> Response:
        survey_id = request.params["surveyId"]
        if survey_id not in self.brand.surveys:
            raise not_found(f"Survey not found: {survey_id}", "GS_1")
        return self.ok(
            {
                "id": survey_id,
                "name": f"Simulated survey {survey_id}",
                "ownerId": self.brand.user_id,
                "isActive": self.brand.surveys[survey_id],
            }
        )


def required_query(request: Request, name: str) -> str:
    value = request.query.get(name)
    if not value:
        raise bad_request(f"Missing required query parameter: {name}")
    return value


def parse_expiration(value: Any, account_zone: ZoneInfo) -> datetime:
    """ISO 8601 with ``Z`` (UTC), or a naive ``YYYY-MM-DD HH:MM:SS``, read in the account's
    time zone (a production pool's links expired 6 hours after the UTC it meant)."""
    if isinstance(value, str):
        for form in ("%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S.%fZ"):
            try:
                return datetime.strptime(value, form).replace(tzinfo=UTC)
            except ValueError:
                continue
        try:
            naive = datetime.strptime(value, "%Y-%m-%d %H:%M:%S")
        except ValueError:
            pass
        else:
            return naive.replace(tzinfo=account_zone).astimezone(UTC)
    raise bad_request(
        "Invalid value for expirationDate: expected 'YYYY-MM-DD HH:MM:SS' or "
        "ISO 8601 like '2026-12-31T00:00:00Z'."
    )


def contact_problem(contact: dict[str, Any]) -> str | None:
    """Why a contact's fields are unacceptable, or ``None``."""
    for key in _STRING_FIELDS:
        if key in contact and not isinstance(contact[key], str):
            return f"Invalid value for {key}: expected a string."
    email = contact.get("email")
    if email and "@" not in email:  # an empty email clears the field (``forget`` sends one)
        return f"Invalid value for email: {email!r} is not an email address."
    if "unsubscribed" in contact and not isinstance(contact["unsubscribed"], bool):
        return "Invalid value for unsubscribed: expected true or false."
    for key in ("embeddedData", "privateEmbeddedData", "transactionData"):
        data = contact.get(key, {})
        if not isinstance(data, dict) or not all(
            isinstance(item, str | int | float | bool) for item in data.values()
        ):
            return f"Invalid value for {key}: expected an object of strings or numbers."
        problem = embedded_data_problem(data)
        if problem:
            return problem
    return None


def embedded_data_problem(data: dict[str, Any]) -> str | None:
    """Field names at most 200 characters, values at most 1,024 (the directory's limits)."""
    for name, value in data.items():
        if len(name) > MAX_EMBEDDED_NAME:
            return f"Embedded data field name longer than {MAX_EMBEDDED_NAME} characters."
        if len(str(value)) > MAX_EMBEDDED_VALUE:
            return f"Embedded data value of {name!r} longer than {MAX_EMBEDDED_VALUE} characters."
    return None
