"""The Qualtrics v3 endpoints linkpool calls, and the limits Qualtrics documents for them.

One table, read by the client (each call names its ``Endpoint``), by anything that estimates or
reports calls (keys are ``Endpoint.key``, the form ``client.calls`` counts), and by the simulator
(which may import from here; nothing here imports the simulator). Paths are templates below the
base URL (``…/API/v3``); ``{directoryId}`` is filled from the client's directory.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, Literal

HttpMethod = Literal["GET", "POST", "PUT", "DELETE"]

IDEMPOTENT_METHODS: Final = frozenset({"GET", "PUT", "DELETE"})

MAX_IMPORT_CONTACTS: Final = 10_000
"""Contacts in one bulk import (``transactioncontacts``)."""

MAX_IMPORT_BYTES: Final = 5_000_000
"""Body size of one bulk import. Qualtrics says "5 MB" without saying which megabyte: the
decimal reading is the smaller, so a client that splits below it is refused under neither."""

MAX_CONTACTS_PAGE_SIZE: Final = 50
"""The largest ``pageSize`` of a list's contacts listing."""

MAILING_LIST_LISTING_CAP: Final = 10_000
"""A directory "can only return 10,000 mailing lists at a time"."""


@dataclass(frozen=True)
class Endpoint:
    """One call: its HTTP method and its path template (``/distributions/{distributionId}``)."""

    method: HttpMethod
    path: str

    @property
    def key(self) -> str:
        """``"GET /distributions/{distributionId}"``: how calls are counted, logged and reported."""
        return f"{self.method} {self.path}"

    @property
    def idempotent(self) -> bool:
        """Whether repeating the call is harmless (so retrying it after no answer is safe)."""
        return self.method in IDEMPOTENT_METHODS

    def __str__(self) -> str:
        return self.key


_MAILING_LISTS = "/directories/{directoryId}/mailinglists"
_MAILING_LIST = _MAILING_LISTS + "/{mailingListId}"
_CONTACT = _MAILING_LIST + "/contacts/{contactId}"
_IMPORTS = _MAILING_LIST + "/transactioncontacts"
_DISTRIBUTION = "/distributions/{distributionId}"
_EXPORTS = "/surveys/{surveyId}/export-responses"
_UPDATES = "/surveys/{surveyId}/update-responses"

WHOAMI: Final = Endpoint("GET", "/whoami")
CREATE_MAILING_LIST: Final = Endpoint("POST", _MAILING_LISTS)
LIST_MAILING_LISTS: Final = Endpoint("GET", _MAILING_LISTS)
GET_MAILING_LIST: Final = Endpoint("GET", _MAILING_LIST)
DELETE_MAILING_LIST: Final = Endpoint("DELETE", _MAILING_LIST)
LIST_CONTACTS: Final = Endpoint("GET", _MAILING_LIST + "/contacts")
UPDATE_CONTACT: Final = Endpoint("PUT", _CONTACT)
DELETE_CONTACT: Final = Endpoint("DELETE", _CONTACT)
DELETE_DIRECTORY_CONTACT: Final = Endpoint(
    "DELETE", "/directories/{directoryId}/contacts/{contactId}"
)
START_IMPORT: Final = Endpoint("POST", _IMPORTS)
GET_IMPORT: Final = Endpoint("GET", _IMPORTS + "/{importId}")
CREATE_DISTRIBUTION: Final = Endpoint("POST", "/distributions")
LIST_DISTRIBUTIONS: Final = Endpoint("GET", "/distributions")
GET_DISTRIBUTION: Final = Endpoint("GET", _DISTRIBUTION)
DELETE_DISTRIBUTION: Final = Endpoint("DELETE", _DISTRIBUTION)
LIST_LINKS: Final = Endpoint("GET", _DISTRIBUTION + "/links")
GET_SURVEY: Final = Endpoint("GET", "/surveys/{surveyId}")
START_RESPONSE_EXPORT: Final = Endpoint("POST", _EXPORTS)
GET_RESPONSE_EXPORT: Final = Endpoint("GET", _EXPORTS + "/{progressId}")
GET_RESPONSE_EXPORT_FILE: Final = Endpoint("GET", _EXPORTS + "/{fileId}/file")
START_RESPONSE_UPDATE: Final = Endpoint("POST", _UPDATES)
GET_RESPONSE_UPDATE: Final = Endpoint("GET", _UPDATES + "/{progressId}")
UPDATE_RESPONSE: Final = Endpoint("PUT", "/responses/{responseId}")

ENDPOINTS: Final[Mapping[str, Endpoint]] = MappingProxyType(
    {
        "whoami": WHOAMI,
        "create_mailing_list": CREATE_MAILING_LIST,
        "list_mailing_lists": LIST_MAILING_LISTS,
        "get_mailing_list": GET_MAILING_LIST,
        "delete_mailing_list": DELETE_MAILING_LIST,
        "list_contacts": LIST_CONTACTS,
        "update_contact": UPDATE_CONTACT,
        "delete_contact": DELETE_CONTACT,
        "delete_directory_contact": DELETE_DIRECTORY_CONTACT,
        "start_import": START_IMPORT,
        "get_import": GET_IMPORT,
        "create_distribution": CREATE_DISTRIBUTION,
        "list_distributions": LIST_DISTRIBUTIONS,
        "get_distribution": GET_DISTRIBUTION,
        "delete_distribution": DELETE_DISTRIBUTION,
        "list_links": LIST_LINKS,
        "get_survey": GET_SURVEY,
        "start_response_export": START_RESPONSE_EXPORT,
        "get_response_export": GET_RESPONSE_EXPORT,
        "get_response_export_file": GET_RESPONSE_EXPORT_FILE,
        "start_response_update": START_RESPONSE_UPDATE,
        "get_response_update": GET_RESPONSE_UPDATE,
        "update_response": UPDATE_RESPONSE,
    }
)
"""Every endpoint the client calls, by name (the name of the constant, lower-cased)."""
