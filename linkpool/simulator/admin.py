"""A control surface for a served simulator, outside the Qualtrics API (``/_simulator/…``).

It lets a separate process (curl, an acceptance test, the demo) switch faults at runtime and
play the respondent. Same token as the API; nothing here is counted in ``calls``.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

from linkpool.simulator.faults import Faults
from linkpool.simulator.http import (
    JsonObject,
    Request,
    bad_request,
    reject_unknown_keys,
    require_string,
)

ADMIN_PREFIX = "/_simulator"
FAULT_FIELDS = tuple(field.name for field in dataclasses.fields(Faults))


def faults_to_json(faults: Faults) -> JsonObject:
    """``Faults`` as JSON; ``link_lag`` in seconds."""
    values = dataclasses.asdict(faults)
    lag = faults.link_lag
    values["link_lag"] = None if lag is None else lag.total_seconds()
    return values


def faults_from_json(current: Faults, body: JsonObject) -> Faults:
    """``current`` with the fields in ``body`` changed (``link_lag`` in seconds)."""
    reject_unknown_keys(body, FAULT_FIELDS)
    values: dict[str, Any] = dict(body)
    if values.get("link_lag") is not None:
        values["link_lag"] = timedelta(seconds=float(values["link_lag"]))
    try:
        return dataclasses.replace(current, **values)
    except (TypeError, ValueError) as exc:
        raise bad_request(str(exc)) from None


def link_url(request: Request) -> str:
    body = request.json_object()
    reject_unknown_keys(body, ("url",))
    return require_string(body, "url")
