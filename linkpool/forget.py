"""``forget``: erase a recipient from every claim of every pool, on request (issue 10.6).

Locally, in one transaction: the recipient, the idempotency key and the data of each of their
claims are removed and ``erased_at`` is set; the link stays claimed, so it is never handed out
again; a write-back not yet done is cancelled, so it can never write the data later. Where a
write-back may have put the data on the placeholder contact, a clearing is queued and tried at
once: ``PUT …/contacts/{contactId}`` with the recipient field and every data field emptied.

The clearing runs only under the sync lease, so no write-back of the same claim is in flight
beside it. If sync is running, or Qualtrics does not answer, the clearing stays pending and the
next ``sync`` does it; the report says so. The local erasure happens either way.

A replay of an erased claim's idempotency key finds nothing (the key is gone): it is a new
claim, handed a new link, as for a key linkpool never saw.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from linkpool.claimer import check_text
from linkpool.clock import Clock
from linkpool.config import PoolSettings, SyncSettings
from linkpool.errors import InvalidClaim, QualtricsError
from linkpool.lease import Lease
from linkpool.models import MAX_RECIPIENT_LENGTH, Erasure
from linkpool.qualtrics.client import QualtricsClient
from linkpool.store import ErasedClaim, Store
from linkpool.sync import LEASE_NAME, Clearing, clear_contacts


@dataclass
class ForgetReport:
    """What ``forget`` did. It never names the recipient: reports end up in logs."""

    claims_erased: int = 0
    pools: list[str] = field(default_factory=list)
    contacts_cleared: int = 0
    contacts_pending: int = 0  # cleared by the next ``linkpool sync``
    contacts_unreachable: int = 0  # gc deleted the list first: see docs/privacy.md
    contacts_failed: int = 0  # Qualtrics refused the clearing
    nothing_to_clear: int = 0  # no write-back had run: nothing reached Qualtrics
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        if not self.claims_erased:
            return "no claims for this recipient: nothing to erase"
        parts = [
            f"erased {self.claims_erased} claim(s) in {', '.join(self.pools)}",
            f"contacts cleared {self.contacts_cleared}",
            f"pending {self.contacts_pending}",
        ]
        if self.contacts_unreachable:
            parts.append(f"unreachable {self.contacts_unreachable}")
        if self.contacts_failed:
            parts.append(f"failed {self.contacts_failed}")
        return "; ".join(parts)


def forget(
    store: Store,
    recipient: str,
    clock: Clock,
    *,
    client: QualtricsClient | None,
    pools: Mapping[str, PoolSettings],
    sync_settings: SyncSettings,
) -> ForgetReport:
    """Erase ``recipient`` everywhere, then clear their contacts in Qualtrics if it can."""
    check_recipient(recipient)
    lease = Lease(store, LEASE_NAME, clock)
    held = lease.acquire()
    if held:
        lease.start_heartbeat()
    try:
        erased = store.erase_recipient(recipient, now=clock.now(), no_write_back_in_flight=held)
        report = _local_report(erased)
        pending = [claim.link_id for claim in erased if claim.erasure == Erasure.PENDING]
        if not pending:
            return report
        if client is None:
            report.notes.append("no [qualtrics] settings here: `linkpool sync` clears them")
        elif not held:
            holder = lease.current_holder() or "another process"
            report.notes.append(f"sync is running ({holder}): it clears them")
        else:
            with client.guarded(lease.check):  # as sync: no call, no write, once overtaken
                fenced = store.fenced(lease.fence())
                _clear_now(report, client, fenced, pools, sync_settings, clock, pending)
        return report
    finally:
        if held:
            lease.release()


def check_recipient(recipient: object) -> None:
    if not isinstance(recipient, str) or not recipient.strip():
        raise InvalidClaim("recipient is required and must be a non-empty string")
    check_text("recipient", recipient, MAX_RECIPIENT_LENGTH)  # NUL, surrogates: never to SQL


def _local_report(erased: list[ErasedClaim]) -> ForgetReport:
    return ForgetReport(
        claims_erased=len(erased),
        pools=sorted({claim.pool for claim in erased}),
        contacts_pending=sum(claim.erasure == Erasure.PENDING for claim in erased),
        contacts_unreachable=sum(claim.erasure == Erasure.UNREACHABLE for claim in erased),
        nothing_to_clear=sum(claim.erasure is None for claim in erased),
    )


def _clear_now(
    report: ForgetReport,
    client: QualtricsClient,
    store: Store,
    pools: Mapping[str, PoolSettings],
    sync_settings: SyncSettings,
    clock: Clock,
    link_ids: list[int],
) -> None:
    try:
        clearing = clear_contacts(
            client, store, pools, sync_settings, clock, link_ids=link_ids, stop_on_outage=True
        )
    except QualtricsError as exc:  # a refused token: nothing was cleared
        report.notes.append(f"Qualtrics: {exc}; `linkpool sync` clears them")
        return
    _add_clearing(report, clearing)


def _add_clearing(report: ForgetReport, clearing: Clearing) -> None:
    report.contacts_cleared = clearing.cleared
    report.contacts_unreachable += clearing.unreachable
    report.contacts_failed = clearing.failed
    report.contacts_pending -= clearing.cleared + clearing.unreachable + clearing.failed
    report.notes.extend(clearing.errors)
    if report.contacts_pending:
        report.notes.append("Qualtrics did not answer: `linkpool sync` retries the clearing")


__all__ = ["ForgetReport", "check_recipient", "forget"]
