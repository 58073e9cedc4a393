"""What the simulated brand holds: surveys, directory contacts, lists, imports, distributions."""

from __future__ import annotations

import random
import string
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

ALPHANUMERIC = string.ascii_letters + string.digits
IMPORT_CONTACT_FIELDS = (
    "firstName",
    "lastName",
    "email",
    "extRef",
    "embeddedData",
    "language",
    "unsubscribed",
    "transactionData",
)
"""The keys of a contact in a bulk import: no ``phone``, no ``privateEmbeddedData``."""
CONTACT_FIELDS = (
    "firstName",
    "lastName",
    "email",
    "phone",
    "extRef",
    "embeddedData",
    "privateEmbeddedData",
    "language",
    "unsubscribed",
)


def timestamp(moment: datetime) -> str:
    """Qualtrics' ISO 8601 form: ``2026-11-22T09:00:00Z``."""
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Contact:
    id: str
    fields: dict[str, Any] = field(default_factory=dict)
    deleted: bool = False

    @property
    def ext_ref(self) -> str | None:
        return self.fields.get("extRef")

    def update(self, values: dict[str, Any]) -> None:
        """Merge ``values``: embedded data is merged key by key, other fields replaced."""
        for key, value in values.items():
            if key in ("embeddedData", "privateEmbeddedData"):
                self.fields.setdefault(key, {}).update(value)
            else:
                self.fields[key] = value

    def as_element(self) -> dict[str, Any]:
        return {
            "contactId": self.id,
            "firstName": self.fields.get("firstName"),
            "lastName": self.fields.get("lastName"),
            "email": self.fields.get("email"),
            "phone": self.fields.get("phone"),
            "extRef": self.fields.get("extRef"),
            "language": self.fields.get("language"),
            "unsubscribed": bool(self.fields.get("unsubscribed", False)),
            "embeddedData": dict(self.fields.get("embeddedData", {})),
        }


@dataclass
class MailingList:
    id: str
    name: str
    owner_id: str
    created: datetime
    modified: datetime
    members: dict[str, str] = field(default_factory=dict)
    """Directory contact id -> its entry in this list (``CGC_…``), in insertion order."""
    deleted: bool = False

    def as_element(self, *, include_count: bool = True) -> dict[str, Any]:
        return {
            "mailingListId": self.id,
            "name": self.name,
            "ownerId": self.owner_id,
            "contactCount": len(self.members) if include_count else 0,
            "creationDate": timestamp(self.created),
            "lastModifiedDate": timestamp(self.modified),
        }


@dataclass
class ImportJob:
    id: str
    mailing_list_id: str
    contacts: list[dict[str, Any]]
    unprocessed: list[int] = field(default_factory=list)
    polls: int = 0
    added: int = 0
    updated: int = 0
    failed: int = 0
    complete: bool = False
    fails: bool = False
    """Drawn at the start (``Faults.import_failure_rate``): the job ends as ``failed``."""


@dataclass
class Link:
    url: str
    distribution_id: str
    contact_id: str
    lookup_id: str
    transaction_id: str
    exceeded_contact_frequency: bool
    lag_draw: float
    """A fixed draw in [0, 1): the link lags while this is below ``link_lag_fraction``."""
    used: bool = False
    snapshot: dict[str, Any] | None = None
    """The contact's embedded data at the respondent's first open: what the response records."""
    opened_at: datetime | None = None


@dataclass
class Distribution:
    id: str
    survey_id: str
    mailing_list_id: str
    description: str
    expires_at: datetime
    created: datetime
    owner_id: str
    links: list[Link] = field(default_factory=list)
    deleted: bool = False

    def as_element(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "parentDistributionId": None,
            "ownerId": self.owner_id,
            "organizationId": "linkpool-sim",
            "requestStatus": "Generated",
            "requestType": "GeneratedInvite",
            "sendDate": timestamp(self.created),
            "createdDate": timestamp(self.created),
            "modifiedDate": timestamp(self.created),
            "description": self.description,
            "surveyId": self.survey_id,
            "headers": {"fromEmail": None, "replyToEmail": None, "fromName": None},
            "recipients": {
                "mailingListId": self.mailing_list_id,
                "contactId": None,
                "libraryId": None,
                "sampleId": None,
            },
            "message": {"libraryId": None, "messageId": None, "messageType": "Inline"},
            "surveyLink": {
                "surveyId": self.survey_id,
                "expirationDate": timestamp(self.expires_at),
                "linkType": "Individual",
            },
            "embeddedData": None,
            "stats": {
                "sent": 0,
                "failed": 0,
                "started": 0,
                "bounced": 0,
                "opened": 0,
                "skipped": 0,
                "finished": 0,
                "complaints": 0,
                "blocked": 0,
            },
        }


@dataclass
class SurveyResponse:
    """A respondent took the survey: the contact's embedded data as it was when they first
    opened the link (``opened_at``), not when they finished (``recorded_at``); later changed
    only by response updates."""

    distribution_id: str
    contact_id: str
    embedded_data: dict[str, Any]
    recorded_at: datetime
    opened_at: datetime
    id: str = ""
    survey_id: str = ""
    ext_ref: str | None = None
    finished: bool = True

    def as_element(self) -> dict[str, Any]:
        """The element of a JSON response export: ``responseId`` and ``values``; embedded data
        sits among the values, by field name, as Qualtrics exports it."""
        started = self.opened_at
        return {
            "responseId": self.id,
            "values": {
                **self.embedded_data,
                "startDate": timestamp(started),
                "endDate": timestamp(self.recorded_at),
                "status": 0,
                "progress": 100 if self.finished else 50,
                "duration": int((self.recorded_at - started).total_seconds()),
                "finished": 1 if self.finished else 0,
                "recordedDate": timestamp(self.recorded_at),
                "_recordId": self.id,
                "distributionChannel": "gl",
                "userLanguage": "EN",
                "externalDataReference": self.ext_ref or "",
            },
            "labels": {"status": "IP Address", "finished": "True" if self.finished else "False"},
            "displayedFields": [],
            "displayedValues": {},
        }


@dataclass
class ExportJob:
    """A response export: done after ``polls_needed`` polls, then its file is a zip."""

    id: str
    survey_id: str
    start: datetime | None
    end: datetime | None
    polls_needed: int
    polls: int = 0
    failed: bool = False
    file_id: str | None = None


@dataclass
class UpdateJob:
    """A bulk response update: applied when it completes, after ``polls_needed`` polls."""

    id: str
    survey_id: str
    updates: list[dict[str, Any]]
    polls_needed: int
    polls: int = 0
    complete: bool = False


class Brand:
    """All state of one simulated Qualtrics brand with one XM directory. Not locked itself."""

    def __init__(self, *, directory_id: str, datacenter: str, seed: int) -> None:
        self.directory_id = directory_id
        self.datacenter = datacenter
        self.random = random.Random(seed)
        self.user_id = self.new_id("UR_")
        self.surveys: dict[str, bool] = {}
        self.contacts: dict[str, Contact] = {}
        self.contacts_by_ext_ref: dict[str, str] = {}
        self.mailing_lists: dict[str, MailingList] = {}
        self.imports: dict[str, ImportJob] = {}
        self.distributions: dict[str, Distribution] = {}
        self.links: dict[str, Link] = {}
        self.responses: list[SurveyResponse] = []
        self.exports: dict[str, ExportJob] = {}
        self.export_files: dict[str, bytes] = {}
        self.updates: dict[str, UpdateJob] = {}

    def new_id(self, prefix: str) -> str:
        return prefix + "".join(self.random.choices(ALPHANUMERIC, k=15))

    def request_id(self) -> str:
        return str(uuid.UUID(int=self.random.getrandbits(128), version=4))

    def live_list(self, mailing_list_id: str) -> MailingList | None:
        mailing_list = self.mailing_lists.get(mailing_list_id)
        return mailing_list if mailing_list and not mailing_list.deleted else None

    def live_contact(self, contact_id: str) -> Contact | None:
        contact = self.contacts.get(contact_id)
        return contact if contact and not contact.deleted else None

    def upsert_contact(self, fields: dict[str, Any]) -> tuple[Contact, bool]:
        """The directory deduplicates by ``extRef`` only. Returns (contact, created)."""
        ext_ref = fields.get("extRef")
        existing = self.live_contact(self.contacts_by_ext_ref.get(ext_ref, "")) if ext_ref else None
        if existing is not None:
            existing.update(fields)
            return existing, False
        contact = Contact(self.new_id("CID_"))
        contact.update(fields)
        self.contacts[contact.id] = contact
        if ext_ref:
            self.contacts_by_ext_ref[ext_ref] = contact.id
        return contact, True

    def delete_contact(self, contact: Contact) -> None:
        contact.deleted = True
        if contact.ext_ref and self.contacts_by_ext_ref.get(contact.ext_ref) == contact.id:
            del self.contacts_by_ext_ref[contact.ext_ref]
        for mailing_list in self.mailing_lists.values():
            mailing_list.members.pop(contact.id, None)

    def link_url(self, survey_id: str, distribution_id: str, lookup_id: str) -> str:
        survey_part = survey_id.removeprefix("SV_")
        return (
            f"https://{self.datacenter}.qualtrics.com/jfe/form/{survey_id}"
            f"?Q_DL={distribution_id}_{survey_part}_{lookup_id}&Q_CHL=gl"
        )
