"""The bodies refill sends: a list's placeholder contacts, cut into imports."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from linkpool.qualtrics.endpoints import MAX_IMPORT_BYTES, MAX_IMPORT_CONTACTS
from linkpool.refill.failures import CannotComplete
from linkpool.refill.naming import slot_key


def placeholder_contacts(
    list_name: str, size: int, embedded_data: Mapping[str, str]
) -> list[dict[str, Any]]:
    """The contacts of one list. Keys without a value are omitted (imports refuse nulls)."""
    contacts: list[dict[str, Any]] = []
    for index in range(size):
        contact: dict[str, Any] = {"extRef": slot_key(list_name, index)}
        if embedded_data:
            contact["embeddedData"] = dict(embedded_data)
        contacts.append(contact)
    return contacts


def import_batches(
    contacts: list[dict[str, Any]],
    *,
    max_contacts: int = MAX_IMPORT_CONTACTS,
    max_bytes: int = MAX_IMPORT_BYTES,
) -> list[list[dict[str, Any]]]:
    """``contacts`` cut into as few imports as the limits allow (count and encoded size)."""
    envelope = len(json.dumps({"contacts": []}))
    batches: list[list[dict[str, Any]]] = []
    batch: list[dict[str, Any]] = []
    size = envelope
    for contact in contacts:
        encoded = len(json.dumps(contact).encode("utf-8")) + 2  # and the ", " between items
        if envelope + encoded > max_bytes:
            raise CannotComplete(f"one placeholder contact is larger than {max_bytes} bytes")
        if batch and (len(batch) >= max_contacts or size + encoded > max_bytes):
            batches.append(batch)
            batch, size = [], envelope
        batch.append(contact)
        size += encoded
    if batch:
        batches.append(batch)
    return batches


__all__ = ["MAX_IMPORT_BYTES", "MAX_IMPORT_CONTACTS", "import_batches", "placeholder_contacts"]
