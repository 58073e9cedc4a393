"""How refill names what it creates on Qualtrics, and its lease: gc reads the same rules."""

from __future__ import annotations

import uuid


def list_name_prefix(list_prefix: str) -> str:
    """How the names of one installation's lists begin (``[qualtrics] list_prefix`` and a
    slash): gc takes the lists named so as its own, and no other."""
    return f"{list_prefix}/"


def new_list_name(list_prefix: str, pool: str) -> str:
    """A list's unique, deterministic-once-chosen name: how a lost create is found again."""
    return f"{list_name_prefix(list_prefix)}{pool}/{uuid.uuid4().hex}"


def refill_lease_name(pool: str) -> str:
    """The lease a pool's refill holds while it works on the pool's lists."""
    return f"refill:{pool}"


def slot_key(list_name: str, index: int) -> str:
    """The ``extRef`` of a list's ``index``-th placeholder: unique across all lists (the list's
    random part, not its full name, so that it fits the column whatever the pool's name)."""
    return f"linkpool:{list_name.rsplit('/', 1)[-1]}#{index}"


__all__ = ["list_name_prefix", "new_list_name", "refill_lease_name", "slot_key"]
