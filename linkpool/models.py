"""The tables. Alembic migrations under ``migrations/`` must agree with these (a test checks).

- ``lists``: one row per Qualtrics mailing list we create, with its provisioning state.
- ``links``: one row per placeholder contact and its personal link; claimed in place.
- ``links`` also records a ``forget``: ``erased_at`` and the clearing of the contact.
- ``leases``: named locks with an expiry (scheduler leader, per-pool refill, gc, sync).
- ``closed_list_totals``: per pool, the claimed and void links of its deleted lists and their
  answered and finished claims, added once by gc when it deletes a list (and by the responses
  job when a response arrives on a claim of a list already deleted), so counting a year of
  claims and responses reads one row (docs/status.md).
- ``response_cursors``, ``response_updates``, ``stray_responses``: response tracking and
  enrichment (``linkpool responses``): how far each pool's export got, the bulk update jobs,
  and responses on links nobody claimed.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum, nonmember

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on every backend.

    SQLite has no time zones: values are stored as naive UTC, so string order is time order.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("linkpool stores only timezone-aware datetimes")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class ListState(StrEnum):
    """A list's provisioning states, in order; then its end states."""

    PLANNED = "planned"
    # The create was sent (recorded before the POST): its answer may have been lost, so a
    # resumed list is looked up by name before anything is created again.
    CREATING = "creating"
    LIST_CREATED = "list_created"
    IMPORTING = "importing"
    IMPORTED = "imported"
    DISTRIBUTED = "distributed"
    READY = "ready"
    FAILED = "failed"
    # gc's progress while it deletes a list (a killed gc resumes from these): the list's
    # unclaimed links are void and its distribution is being deleted; then its mailing list.
    REAPING = "reaping"
    DISTRIBUTION_DELETED = "distribution_deleted"
    DELETED = "deleted"

    # Groups of states, not states (``nonmember``): written as the values they group.
    PROVISIONING = nonmember(
        ("planned", "creating", "list_created", "importing", "imported", "distributed")
    )
    # gc has deleted, or is deleting, the list: no call through the list reaches its contacts.
    GONE = nonmember(("reaping", "distribution_deleted", "deleted"))
    LIVE = nonmember(
        (
            "planned",
            "creating",
            "list_created",
            "importing",
            "imported",
            "distributed",
            "ready",
            "failed",
        )
    )


class LinkStatus(StrEnum):
    AVAILABLE = "available"
    CLAIMED = "claimed"
    VOID = "void"


class WriteBack(StrEnum):
    """The state of a claimed link's recipient write-back to Qualtrics."""

    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"
    # The recipient was forgotten before the write-back ran: it never will (``forget``).
    CANCELLED = "cancelled"


class Erasure(StrEnum):
    """The clearing of a forgotten recipient's data from its placeholder contact."""

    PENDING = "pending"  # the contact still carries (or may carry) the data: sync clears it
    DONE = "done"  # cleared in Qualtrics
    FAILED = "failed"  # Qualtrics refused the clearing (see ``erasure_error``)
    UNREACHABLE = "unreachable"  # gc deleted the list first: no list call reaches the contact


MAX_RECIPIENT_LENGTH = 255
"""A recipient id's length limit: the claim and ``forget`` check it before the column does."""


class Enrichment(StrEnum):
    """The state of a claim's data on its recorded response (``linkpool responses``).

    ``pending``: answered, the data still to be put on the response; ``sending``: in a bulk
    update job (``enrichment_update_id``); ``verify``: sent, but whether it landed is unknown
    (the answer was lost, or the run was killed): the next export shows the response's data,
    which decides; ``done``; ``failed``: refused for good."""

    PENDING = "pending"
    SENDING = "sending"
    VERIFY = "verify"
    DONE = "done"
    FAILED = "failed"


class UpdateState(StrEnum):
    """A bulk response update job: recorded before its POST (``sending``), then ``running``
    with its progress id, then ``complete`` or ``failed``; ``unknown`` when the POST's answer
    never came."""

    SENDING = "sending"
    RUNNING = "running"
    COMPLETE = "complete"
    FAILED = "failed"
    UNKNOWN = "unknown"


metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

lists = Table(
    "lists",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("pool", String(64), nullable=False),
    Column("survey_id", String(32), nullable=False),
    Column("name", String(200), nullable=False, unique=True),
    Column("state", String(20), nullable=False),
    Column("size", Integer, nullable=False),
    Column("mailing_list_id", String(32), unique=True),
    Column("import_id", String(64)),
    Column("distribution_id", String(32), unique=True),
    Column("expires_at", UTCDateTime),
    Column("links_stored", Integer, nullable=False, server_default=text("0")),
    Column("shortfall", Integer, nullable=False, server_default=text("0")),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("deleted_at", UTCDateTime),
    Column("last_error", Text),
    Index("ix_lists_pool_state", "pool", "state"),
    # The lists not deleted yet, a few among the history's thousands: refill's resume and the
    # counts (by pool), gc's candidates (by state and expiry). Queries name the predicate
    # (``LIVE_LIST``) so that SQLite's planner, too, knows the index applies.
    Index(
        "ix_lists_live_pool",
        "pool",
        "state",
        sqlite_where=text("state != 'deleted'"),
        postgresql_where=text("state != 'deleted'"),
    ),
    Index(
        "ix_lists_live_expires_at",
        "state",
        "expires_at",
        sqlite_where=text("state != 'deleted'"),
        postgresql_where=text("state != 'deleted'"),
    ),
)

UNSETTLED_ENRICHMENT = "enrichment IN ('pending', 'sending', 'verify', 'failed')"
"""The partial index's predicate over enrichment still to do; queries that count through that
index repeat it word for word, since SQLite uses a partial index only for a WHERE clause that
contains its predicate (it does not see that a subset of the IN list implies it)."""

links = Table(
    "links",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("list_id", Integer, ForeignKey("lists.id"), nullable=False),
    Column("pool", String(64), nullable=False),
    Column("ext_ref", String(100), nullable=False, unique=True),
    Column("contact_id", String(32), nullable=False),
    Column("contact_lookup_id", String(32)),
    Column("url", String(500), nullable=False, unique=True),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("status", String(16), nullable=False),
    Column("recipient", String(MAX_RECIPIENT_LENGTH)),
    Column("idempotency_key", String(255)),
    Column("data", Text),
    Column("claimed_at", UTCDateTime),
    Column("voided_at", UTCDateTime),
    Column("writeback", String(16)),
    Column("writeback_attempts", Integer, nullable=False, server_default=text("0")),
    Column("writeback_due_at", UTCDateTime),
    Column("writeback_error", Text),
    # Set by ``forget``: recipient, key and data are gone; the link stays claimed.
    Column("erased_at", UTCDateTime),
    Column("erasure", String(16)),
    Column("erasure_fields", Text),  # JSON list of the data keys to empty on the contact
    Column("erasure_attempts", Integer, nullable=False, server_default=text("0")),
    Column("erasure_due_at", UTCDateTime),
    Column("erasure_error", Text),
    Column("response_id", String(64), unique=True),
    Column("response_finished", Boolean),
    Column("responded_at", UTCDateTime),
    Column("enrichment", String(16)),
    Column("enrichment_update_id", Integer, ForeignKey("response_updates.id")),
    Column("enrichment_error", Text),
    UniqueConstraint("pool", "idempotency_key"),
    # The claim's probe: available links of one pool by expiry; partial, so it stays small.
    Index(
        "ix_links_claimable",
        "pool",
        "expires_at",
        sqlite_where=text("status = 'available'"),
        postgresql_where=text("status = 'available'"),
    ),
    # Due write-backs by time (sync); with the pool, also a pool's pending count, read from
    # the index alone (a second index would cost every claim one more entry).
    Index(
        "ix_links_writeback_pending",
        "writeback_due_at",
        "pool",
        sqlite_where=text("writeback = 'pending'"),
        postgresql_where=text("writeback = 'pending'"),
    ),
    Index(
        "ix_links_erasure_pending",
        "erasure_due_at",
        sqlite_where=text("erasure = 'pending'"),
        postgresql_where=text("erasure = 'pending'"),
    ),
    # A list's links by status: gc's live-claim check and the counts of live lists' claimed
    # and void links, read from the index alone.
    Index("ix_links_list_id_status_expires_at", "list_id", "status", "expires_at"),
    # Claims by time: `claimed (24 h)` and `export --since` read a range, not the history.
    Index("ix_links_pool_claimed_at", "pool", "claimed_at"),
    Index(
        "ix_links_writeback_failed",
        "pool",
        sqlite_where=text("writeback = 'failed'"),
        postgresql_where=text("writeback = 'failed'"),
    ),
    # Answered claims of a pool by time (status counts); enrichment not done yet (to do, in
    # flight, to verify, refused), per pool: the queue and status's counts, never the history.
    Index(
        "ix_links_answered",
        "pool",
        "responded_at",
        sqlite_where=text("response_id IS NOT NULL"),
        postgresql_where=text("response_id IS NOT NULL"),
    ),
    # Answered claims by list: the answered and finished claims of the lists not deleted yet,
    # read from the index alone (SQLite needs ``response_id`` in it to see that). The claim
    # never writes it: it sets no response.
    Index(
        "ix_links_answered_list_id",
        "list_id",
        "response_finished",
        "response_id",
        sqlite_where=text("response_id IS NOT NULL"),
        postgresql_where=text("response_id IS NOT NULL"),
    ),
    Index(
        "ix_links_enrichment_unsettled",
        "pool",
        "enrichment",
        sqlite_where=text(UNSETTLED_ENRICHMENT),
        postgresql_where=text(UNSETTLED_ENRICHMENT),
    ),
)

leases = Table(
    "leases",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("holder", String(200), nullable=False),
    Column("acquired_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
)

job_successes = Table(
    "job_successes",
    metadata,
    Column("job", String(32), primary_key=True),
    Column("pool", String(64), primary_key=True),
    Column("succeeded_at", UTCDateTime, nullable=False),
)
"""When a job last succeeded, per pool: what ``status --check`` and the health checks read."""

# --- service keys (``linkpool keys``; see linkpool/service/keys.py) ----------------------------

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(100), nullable=False, unique=True),
    # sha256 of the whole key, hex: the key itself is never stored.
    Column("key_hash", String(64), nullable=False, unique=True),
    # A short public part of the key (``lp_ab12cd…``) so people can tell keys apart in a list.
    Column("key_prefix", String(16), nullable=False),
    # JSON array of pool names, or NULL for every pool.
    Column("pools", Text),
    Column("created_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime),
)

closed_list_totals = Table(
    "closed_list_totals",
    metadata,
    Column("pool", String(64), primary_key=True),
    Column("lists", Integer, nullable=False),
    Column("claimed", Integer, nullable=False),
    Column("void", Integer, nullable=False),
    Column("answered", Integer, nullable=False, server_default=text("0")),
    Column("finished", Integer, nullable=False, server_default=text("0")),
)

response_cursors = Table(
    "response_cursors",
    metadata,
    Column("pool", String(64), primary_key=True),
    Column("survey_id", String(32), nullable=False),
    # Responses recorded before this were all read; the next export starts a little earlier.
    Column("recorded_until", UTCDateTime),
    # The export in flight (a killed run polls it again instead of starting another).
    Column("export_progress_id", String(64)),
    Column("export_start", UTCDateTime),
    Column("export_requested_at", UTCDateTime),
    Column("updated_at", UTCDateTime, nullable=False),
)

response_updates = Table(
    "response_updates",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("pool", String(64), nullable=False),
    Column("survey_id", String(32), nullable=False),
    Column("progress_id", String(64)),
    Column("state", String(16), nullable=False),
    Column("items", Integer, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("error", Text),
    Index("ix_response_updates_pool_state", "pool", "state"),
)

stray_responses = Table(
    "stray_responses",
    metadata,
    Column("response_id", String(64), primary_key=True),
    Column("pool", String(64), nullable=False),
    Column("ext_ref", String(100), nullable=False),
    Column("link_status", String(16), nullable=False),
    Column("recorded_at", UTCDateTime),
    Column("seen_at", UTCDateTime, nullable=False),
    Index("ix_stray_responses_pool", "pool"),
)
