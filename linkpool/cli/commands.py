"""The commands over claims, stock and the jobs: ``db``, ``claim``, ``status``, ``export``,
``gc``, ``sync``, ``refill``, ``run``, ``simulator``, ``demo`` (registered by ``linkpool.cli``)."""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import click

from linkpool import health
from linkpool.archive import ARCHIVE_FORMATS
from linkpool.archive import archive as archive_claims
from linkpool.claimer import Claim
from linkpool.cli.app import (
    EXIT_FAILURE,
    App,
    current_app,
    echo_json,
    format_table,
    pass_app,
)
from linkpool.clock import Clock
from linkpool.config import PoolSettings
from linkpool.db import create_engine, current_revision, head_revision, upgrade
from linkpool.doctor import diagnose
from linkpool.errors import InvalidClaim, LeaseHeld, LinkPoolError
from linkpool.export import FORMATS, export_to_file, write_claims
from linkpool.forget import forget as forget_recipient
from linkpool.gc import GcReport, collect, delete_orphans, find_orphans
from linkpool.jobs import intervals
from linkpool.pool import LinkPool
from linkpool.qualtrics.client import TRANSIENT_ERRORS, QualtricsClient
from linkpool.refill import Progress, RefillReport, refill_lease_name
from linkpool.refill import refill as refill_pools
from linkpool.responses import track_responses
from linkpool.scheduler import run_daemon
from linkpool.status import pool_detail, pools_report
from linkpool.store import Store
from linkpool.sync import sync as sync_write_backs
from linkpool.timespec import parse_instant


def skipped_as_running(exc: LeaseHeld, *, as_json: bool) -> None:
    """Another process is doing this job: one line (or a JSON document), exit 0."""
    if as_json:
        echo_json({"skipped": "already running", "holder": str(exc)})
    else:
        click.echo(f"linkpool: {exc}", err=True)


@click.group()
def db() -> None:
    """Database schema commands."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True, help="Target revision.")
@pass_app
def db_upgrade(app: App, revision: str) -> None:
    """Create or migrate the database schema."""
    engine = create_engine(app.settings.database_url)
    try:
        before = current_revision(engine)
        upgrade(engine, revision)
        after = current_revision(engine)
    finally:
        engine.dispose()
    if before == after:
        click.echo(f"database already at revision {after}")
    else:
        click.echo(
            f"database upgraded from {before or 'empty'} to {after} (head {head_revision()})"
        )


@click.command()
@click.argument("pool")
@click.option("--recipient", required=True, help="Who the link is for (your id for them).")
@click.option("--key", help="Idempotency key: a repeat returns the first claim.")
@click.option("--data", "data_text", help="Transaction data, a JSON object (at most 64 KiB).")
@click.option("--json", "as_json", is_flag=True, help="Print the whole claim as JSON.")
@click.option(
    "--sync",
    "write_back",
    is_flag=True,
    help="Also write the recipient and data onto the link's contact in Qualtrics now.",
)
@pass_app
def claim(
    app: App,
    pool: str,
    recipient: str,
    key: str | None,
    data_text: str | None,
    as_json: bool,
    write_back: bool,
) -> None:
    """Claim one link of POOL for a recipient and print its URL.

    With --sync the write-back happens before the command returns; if Qualtrics fails, the
    claim is printed all the same and its write-back stays due for `linkpool sync`.
    """
    data = parse_data(data_text)
    if write_back:
        result = claim_and_write_back(app, pool, recipient=recipient, key=key, data=data)
    else:
        result = app.linkpool.claim(pool, recipient=recipient, key=key, data=data)
    if as_json:
        echo_json(result.to_dict())
    else:
        click.echo(result.url)


def claim_and_write_back(
    app: App, pool: str, *, recipient: str, key: str | None, data: dict[str, Any] | None
) -> Claim:
    """``claim --sync``: the claim, then its write-back, on the command's Qualtrics client."""
    with (
        qualtrics_client(app) as client,
        LinkPool.from_settings(app.settings, clock=app.clock, client=client) as lp,
    ):
        result = lp.claim(pool, recipient=recipient, key=key, data=data, sync=True)
        if not lp.written_back(result.link_id):
            click.echo(
                f"linkpool: link #{result.link_id} claimed; its write-back to Qualtrics did not "
                "go through and is left for `linkpool sync`",
                err=True,
            )
    return result


@click.command()
@click.argument("pool")
@click.option("--recipient", help="Every claim of this recipient.")
@click.option("--key", help="The claim made with this idempotency key.")
@click.option("--json", "as_json", is_flag=True, help="Print the claims as JSON (URLs included).")
@pass_app
def claims(app: App, pool: str, recipient: str | None, key: str | None, as_json: bool) -> None:
    """The claims of one recipient, or the claim of one idempotency key, in POOL.

    The table leaves out the links' URLs (bearer credentials); --json has them, as `claim
    --json` does. `usable` says whether the link still opens (unexpired, its list not deleted).
    """
    if (recipient is None) == (key is None):
        raise click.UsageError("give exactly one of --recipient and --key")
    lp = app.linkpool
    if key is not None:
        found = lp.claim_by_key(pool, key)
        matches = [found] if found is not None else []
    else:
        matches = lp.claims_of(pool, recipient or "")
    usable = [lp.usable(match) for match in matches]
    if as_json:
        documents = [
            {**match.to_dict(), "usable": ok} for match, ok in zip(matches, usable, strict=True)
        ]
        echo_json({"claims": documents})
        return
    if not matches:
        what = f"key {key!r}" if key is not None else f"recipient {recipient!r}"
        click.echo(f"no claim of {what} in pool {pool!r}")
        return
    rows = [
        (
            match.link_id,
            match.recipient,
            match.key or "-",
            f"{match.claimed_at:%Y-%m-%d %H:%M}",
            f"{match.expires_at:%Y-%m-%d %H:%M}",
            "yes" if ok else "no",
        )
        for match, ok in zip(matches, usable, strict=True)
    ]
    headers = ("link", "recipient", "key", "claimed (UTC)", "expires (UTC)", "usable")
    click.echo(format_table(headers, rows))


def parse_data(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except RecursionError:
        raise InvalidClaim("--data is nested too deeply to be a transaction's data") from None
    except ValueError as exc:  # JSONDecodeError, and integers past Python's 4,300 digits
        raise InvalidClaim(f"--data is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidClaim('--data must be a JSON object, like \'{"store": "12"}\'')
    return value


@click.command()
@click.argument("pool_name", metavar="[POOL]", required=False)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--check",
    "check_health",
    is_flag=True,
    help=f"Exit {health.CHECK_FAILED_EXIT} when a pool is LOW or EMPTY, write-backs failed, "
    "or no refill succeeded within --max-intervals refill intervals (for monitors).",
)
@click.option(
    "--max-intervals",
    type=click.IntRange(1, 1000),
    default=health.DEFAULT_MAX_INTERVALS,
    show_default=True,
    help="With --check: refill intervals without a success before the check fails.",
)
@pass_app
def status(
    app: App, pool_name: str | None, as_json: bool, check_health: bool, max_intervals: int
) -> None:
    """Stock and health of every pool; with POOL, also why it is where it is (its refill
    lock's holder, its last successful refill, its newest failed lists)."""
    lp = app.linkpool
    pools = lp.pools if pool_name is None else {pool_name: lp.pool(pool_name)}
    if check_health:
        status_check(app, pools, as_json, max_intervals)
        return
    names = None if pool_name is None else [pool_name]
    report = pools_report(lp.pools, lp.counts, names, responses=lp.response_counts)
    if pool_name is not None:
        detail = pool_detail(
            lp.store, pool_name, refill_lock=refill_lease_name(pool_name), now=lp.clock.now()
        )
        report[pool_name]["detail"] = detail
    if as_json:
        echo_json({"pools": report})
        return
    if not report:
        click.echo("no pools configured: add a [pools.<name>] table to the configuration")
        return
    headers = (
        "pool",
        "claimable",
        "too old",
        "claimed 24h",
        "claimed",
        "lists",
        "sync due",
        "answered",
        "rate",
        "unclaimed resp.",
        "health",
    )
    rows = [
        (
            name,
            r["claimable"],
            r["too_old"],
            r["claimed_24h"],
            r["claimed"],
            len(r["lists"]),
            r["writeback_pending"],
            r["answered"],
            f"{r['response_rate']:.0%}" if r["response_rate"] is not None else "-",
            r["responses_on_unclaimed_links"],
            r["health"],
        )
        for name, r in report.items()
    ]
    click.echo(format_table(headers, rows))
    if pool_name is not None:
        print_pool_detail(report[pool_name]["detail"])


def print_pool_detail(detail: dict[str, Any]) -> None:
    lock = detail["refill_lock"]
    if lock is None:
        click.echo("refill lock: free")
    else:
        lapsed = " (lapsed: its holder stopped renewing it)" if lock["lapsed"] else ""
        click.echo(
            f"refill lock: held by {lock['holder']} since {lock['since']}, "
            f"until {lock['expires_at']}{lapsed}"
        )
    click.echo(f"last successful refill: {detail['last_refill_success'] or 'never'}")
    failed = detail["failed_lists"]
    if not failed:
        click.echo("failed lists: none")
        return
    click.echo(f"failed lists (newest {len(failed)}):")
    for entry in failed:
        click.echo(
            f"  list {entry['list']} ({entry['mailing_list_id'] or 'never created'}, "
            f"{entry['state']}) at {entry['at']}: {entry['error']}"
        )


def status_check(
    app: App, pools: Mapping[str, PoolSettings], as_json: bool, max_intervals: int
) -> None:
    """``status --check``: one line per problem; exit CHECK_FAILED_EXIT if there is any."""
    lp = app.linkpool
    findings = health.check(
        lp.store,
        pools,
        now=lp.clock.now(),
        refill_interval=intervals(app.settings)["refill"],
        max_intervals=max_intervals,
    )
    if as_json:
        echo_json(health.check_document(findings))
    elif findings:
        for finding in findings:
            click.echo(f"{finding.pool}: {finding.check}: {finding.message}")
    else:
        click.echo(f"OK: {len(pools)} pool(s) healthy")
    if findings:
        click.get_current_context().exit(health.CHECK_FAILED_EXIT)


@click.command()
@click.argument("pool")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="csv", show_default=True)
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), help="File to write.")
@click.option(
    "--since",
    metavar="TIME",
    help="Only claims made at or after TIME: an ISO 8601 date or time (UTC unless an offset "
    "is given) or a duration back from now (24h, 7d).",
)
@click.option(
    "--answered/--unanswered",
    "answered",
    default=None,
    help="Only claims with a response / only those without (the reminder list).",
)
@pass_app
def export(
    app: App, pool: str, fmt: str, output: Path | None, since: str | None, answered: bool | None
) -> None:
    """Every claim of POOL: recipient, key, data, time, URL, contact ids, expiry, response."""
    lp = app.linkpool
    lp.pool(pool)
    start = None if since is None else parse_instant(since, now=app.clock.now(), option="--since")
    if output is None:
        try:
            write_claims(lp.store, pool, sys.stdout, fmt, start, answered=answered)
            sys.stdout.flush()
        except OSError as exc:  # a full disk or a closed pipe behind stdout
            raise LinkPoolError(
                f"cannot write the export to stdout: {exc.strerror or exc}"
            ) from None
        return
    count = export_to_file(lp.store, pool, output, fmt, start, answered=answered)
    click.echo(f"exported {count} claim(s) of pool {pool!r} to {output}", err=True)


@click.command("archive")
@click.option(
    "--before",
    metavar="TIME",
    required=True,
    help="Archive claims made before TIME: an ISO 8601 date or time (UTC unless an offset is "
    "given) or a duration back from now (365d).",
)
@click.option(
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The gzip'd archive to write; never overwritten (a re-run finishes its delete).",
)
@click.option("--format", "fmt", type=click.Choice(ARCHIVE_FORMATS), default="jsonl")
@pass_app
def archive_command(app: App, before: str, output: Path, fmt: str) -> None:
    """Move claims of deleted lists made before TIME out of the database into a file."""
    cutoff = parse_instant(before, now=app.clock.now(), option="--before")
    result = archive_claims(app.linkpool.store, before=cutoff, path=output, fmt=fmt)
    click.echo(result.summary())


# --- gc and sync ---------------------------------------------------------------------------


class StopOnSignal:
    """SIGINT and SIGTERM, while a job command runs: the first sets ``event`` (the job stops
    between two steps, and the client cuts its waits short), later ones say it is stopping.
    Neither raises in the middle of a step, so leases are released and the HTTP client stays
    open until the worker threads are done. ``exit_code`` is 130 (SIGINT) or 143 (SIGTERM)
    once a signal came, else None."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.event = threading.Event()
        self.exit_code: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._on_signal) for sig in self.SIGNALS}
        return self

    def __exit__(self, *exc_info: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.event.is_set():
            click.echo(f"linkpool: {name}: still stopping, after the steps under way", err=True)
            return
        self.exit_code = 128 + signum
        self.event.set()
        click.echo(
            f"linkpool: {name}: stopping after the current step (the next run resumes)", err=True
        )

    def exit_if_stopped(self, ctx: click.Context) -> None:
        if self.exit_code is not None:
            ctx.exit(self.exit_code)


def qualtrics_client(app: App) -> QualtricsClient:
    """A client from ``[qualtrics]`` (the token from its environment variable)."""
    return QualtricsClient.from_settings(
        app.settings.require_qualtrics(), transport=app.transport, clock=app.clock
    )


def check_access(client: QualtricsClient) -> None:
    """Two cheap reads before anything is written: a wrong token, base_url or directory_id
    fails here as one clear error, not after a list was planned in the database."""
    client.check_access()


def check_access_unless_due(client: QualtricsClient, store: Store, clock: Clock) -> None:
    """sync's check: a refused token or unknown directory fails at once; so does Qualtrics
    being down when nothing is due (else the run would say "wrote 0" and exit 0). With
    write-backs due, an outage lets the run go on: each is rescheduled and the report says so
    (``retrying``)."""
    try:
        check_access(client)
    except TRANSIENT_ERRORS:
        if not store.due_writebacks(now=clock.now(), limit=1):
            raise


@click.command("gc")
@click.option(
    "--dry-run", is_flag=True, help="Show what would be deleted and voided; change nothing."
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--orphans", is_flag=True, help="List our lists in the directory the database does not know."
)
@click.option("--delete", is_flag=True, help="With --orphans: delete them, after confirmation.")
@click.option("--yes", is_flag=True, help="With --orphans --delete: do not ask for confirmation.")
@click.pass_context
def gc_command(
    ctx: click.Context, dry_run: bool, as_json: bool, orphans: bool, delete: bool, yes: bool
) -> None:
    """Delete expired and abandoned lists on Qualtrics; void links too old to hand out.

    Never deletes a list holding a claimed link that has not expired. Exits 1 if any
    deletion failed (the next run retries it).
    """
    if delete and not orphans:
        raise click.UsageError("--delete only goes with --orphans")
    if delete and dry_run:
        raise click.UsageError("--delete and --dry-run contradict each other")
    app = current_app(ctx)
    store = app.linkpool.store
    with qualtrics_client(app) as client, StopOnSignal() as stopping:
        check_access(client)
        if orphans:
            gc_orphans(app, client, delete=delete, yes=yes, as_json=as_json)
            return
        client.stop_when(stopping.event)
        try:
            report = collect(
                app.settings, client, store, app.clock, dry_run=dry_run, stop=stopping.event
            )
        except LeaseHeld as exc:
            skipped_as_running(exc, as_json=as_json)
            return
    if as_json:
        echo_json(report.to_dict())
    else:
        print_gc_report(report)
    for error in report.errors:  # once each, on stderr, with --json too
        click.echo(f"linkpool: gc: {error}", err=True)
    stopping.exit_if_stopped(ctx)
    if report.errors:
        ctx.exit(EXIT_FAILURE)


def print_gc_report(report: GcReport) -> None:
    calls = sum(report.api_calls.values())
    if report.dry_run:
        click.echo(
            f"dry run: would delete {len(report.lists)} list(s) "
            f"and void {report.links_voided} link(s)"
        )
    else:
        click.echo(
            f"deleted {report.lists_deleted} list(s), voided {report.links_voided} link(s), "
            f"purged {report.contacts_purged} contact(s), {calls} API call(s)"
        )
    if report.lists:
        rows = [
            (a.list_id, a.pool, a.mailing_list_id or "-", a.distribution_id or "-", a.reason)
            for a in report.lists
        ]
        headers = ("list", "pool", "mailing list", "distribution", "reason")
        click.echo(format_table(headers, rows))


def gc_orphans(
    app: App, client: QualtricsClient, *, delete: bool, yes: bool, as_json: bool
) -> None:
    store = app.linkpool.store
    orphans = find_orphans(client, store, list_prefix=app.settings.require_qualtrics().list_prefix)
    if not as_json:
        rows = [(orphan.mailing_list_id, orphan.name) for orphan in orphans]
        click.echo(f"{len(orphans)} orphan list(s) in the directory")
        if rows:
            click.echo(format_table(("mailing list", "name"), rows))
    if delete and orphans and not yes:
        click.confirm(
            f"Delete these {len(orphans)} list(s) from Qualtrics? Any links they hold stop working",
            abort=True,
            err=True,
        )
    if not (delete and orphans):
        if as_json:
            echo_json({"orphans": [orphan.to_dict() for orphan in orphans], "deleted": 0})
        return
    report = delete_orphans(client, store, app.clock, orphans)
    if as_json:
        echo_json(report.to_dict())
    else:
        click.echo(f"deleted {report.deleted} orphan list(s)")
    for error in report.errors:
        click.echo(f"linkpool: gc: {error}", err=True)
    if report.errors:
        click.get_current_context().exit(EXIT_FAILURE)


@click.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def doctor_command(ctx: click.Context, as_json: bool) -> None:
    """Check the Qualtrics brand with reads only: whoami and its notice, the directory and
    its list count against the 10,000 ceiling, each pool's survey. Exits 1 if a check failed."""
    app = current_app(ctx)
    with qualtrics_client(app) as client:
        report = diagnose(app.settings, client)
    if as_json:
        echo_json(report.to_dict())
    else:
        rows = [(check.name, check.status, check.found) for check in report.checks]
        click.echo(format_table(("check", "status", "found"), rows))
    ctx.exit(report.exit_code)


@click.command("sync")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--retry-failed", is_flag=True, help="Queue failed write-backs again first.")
@click.pass_context
def sync_command(ctx: click.Context, as_json: bool, retry_failed: bool) -> None:
    """Write claimed recipients' data onto their contacts in Qualtrics.

    Exits 1 if a write-back was given up in this run (see `status`; retry with --retry-failed).
    """
    app = current_app(ctx)
    store = app.linkpool.store
    with qualtrics_client(app) as client, StopOnSignal() as stopping:
        check_access_unless_due(client, store, app.clock)
        client.stop_when(stopping.event)
        try:
            report = sync_write_backs(
                app.settings, client, store, app.clock, retry_failed, stop=stopping.event
            )
        except LeaseHeld as exc:
            skipped_as_running(exc, as_json=as_json)
            return
    if as_json:
        echo_json(report.to_dict())
    else:
        requeued = f", requeued {report.requeued}" if retry_failed else ""
        click.echo(
            f"wrote {report.written}, retrying {report.retrying}, gave up {report.failed}{requeued}"
        )
    for error in report.errors:  # once each, on stderr, with --json too
        click.echo(f"linkpool: sync: {error}", err=True)
    stopping.exit_if_stopped(ctx)
    if report.failed:
        ctx.exit(EXIT_FAILURE)


@click.command("forget")
@click.option("--recipient", required=True, help="The recipient id whose claims to erase.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_app
def forget_command(app: App, recipient: str, as_json: bool) -> None:
    """Erase a recipient from every claim of every pool, on request (GDPR erasure).

    The links stay claimed. Their contacts in Qualtrics are cleared now, or by the next `sync`
    if Qualtrics does not answer. Exits 0 once the local erasure is done (also when the
    recipient had no claims); see docs/privacy.md.
    """
    store = app.linkpool.store
    settings = app.settings
    client = qualtrics_client(app) if settings.qualtrics is not None else None
    try:
        report = forget_recipient(
            store,
            recipient,
            app.clock,
            client=client,
            pools=settings.pools,
            sync_settings=settings.sync,
        )
    finally:
        if client is not None:
            client.close()
    if as_json:
        echo_json(report.to_dict())
        return
    click.echo(report.summary())
    for note in report.notes:
        click.echo(f"linkpool: forget: {note}", err=True)


@click.command("responses")
@click.option("--pool", "pool_name", metavar="NAME", help="Only this pool.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def responses_command(ctx: click.Context, pool_name: str | None, as_json: bool) -> None:
    """Mark answered claims from the survey's responses; put claim data on the responses.

    Exits 1 if a pool could not be read or updated in this run (the next run resumes it).
    """
    app = current_app(ctx)
    store = app.linkpool.store
    if pool_name is not None:
        app.linkpool.pool(pool_name)
    with qualtrics_client(app) as client:
        report = track_responses(app.settings, client, store, app.clock, pool_name=pool_name)
    if as_json:
        echo_json(report.to_dict())
    else:
        click.echo(report.summary())
        for error in report.errors:
            click.echo(f"linkpool: responses: {error}", err=True)
    if report.errors:
        ctx.exit(EXIT_FAILURE)


@click.command("simulator")
@click.option("--host", help="The address to listen on (default: loopback).")
@click.option("--port", type=click.IntRange(0, 65535), help="The port to listen on (0: any free).")
@click.option("--token", help="The token it accepts (printed at start if it is the default).")
@click.option("--survey", "surveys", multiple=True, help="An active survey id (repeatable).")
@click.option("--directory-id", help="The XM directory it holds (printed at start).")
@click.option("--seed", type=int, help="Seeds ids and faults.")
@click.option("--links-page-size", type=int, help="Links per page of a links listing.")
@click.option("--rate-limit", type=int, help="Requests per minute before answering 429.")
@click.option("--error-rate", default=0.0, type=float, help="Share of calls answered 500/503.")
@click.option("--lost-response-rate", default=0.0, type=float, help="POSTs done but answered 504.")
@click.option("--link-lag", help="For this long after creation, links listings omit some links.")
@click.option("--link-lag-fraction", default=0.0, type=float)
@click.option("--exceeded-contact-frequency-rate", default=0.0, type=float)
@click.option("--latency", default=0.0, type=float, help="Seconds added to every call.")
@click.option(
    "--links-contact-id",
    type=click.Choice(["lookup", "contact"]),
    help="What the links listing's contactId is: the list entry CGC_ (default) or CID_.",
)
@click.option("--account-time-zone", help="The zone a naive expirationDate is read in.")
@click.option("--proxied-to", metavar="HOST", help="Act as a wrong datacenter naming HOST.")
def simulator_command(
    host: str | None,
    port: int | None,
    token: str | None,
    surveys: tuple[str, ...],
    directory_id: str | None,
    seed: int | None,
    links_page_size: int | None,
    rate_limit: int | None,
    error_rate: float,
    lost_response_rate: float,
    link_lag: str | None,
    link_lag_fraction: float,
    exceeded_contact_frequency_rate: float,
    latency: float,
    links_contact_id: str | None,
    account_time_zone: str | None,
    proxied_to: str | None,
) -> None:
    """Serve the built-in Qualtrics simulator over HTTP (for trying linkpool without an account).

    An option not given takes the simulator's own default (declared once, in linkpool.simulator).
    """
    from linkpool.config import parse_duration
    from linkpool.simulator import Faults, Simulator, run_server
    from linkpool.simulator.fidelity import Fidelity

    try:
        lag = parse_duration(link_lag) if link_lag else None
        faults = Faults(
            rate_limit_per_minute=rate_limit,
            error_rate=error_rate,
            lost_response_rate=lost_response_rate,
            link_lag=lag,
            link_lag_fraction=link_lag_fraction,
            exceeded_contact_frequency_rate=exceeded_contact_frequency_rate,
            latency=latency,
        )
        fidelity = Fidelity(
            **_given(
                links_contact_id=links_contact_id,
                account_time_zone=account_time_zone,
                proxied_to=proxied_to,
            )
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    simulator = Simulator(
        **_given(
            token=token,
            directory_id=directory_id,
            surveys=surveys or None,
            seed=seed,
            links_page_size=links_page_size,
        ),
        fidelity=fidelity,
    )
    simulator.faults = faults
    try:
        run_server(simulator, **_given(host=host, port=port), echo=click.echo)
    except OSError as exc:  # the port in use, an address not of this host
        where = f"{host or 'loopback'}:{port if port is not None else 'default port'}"
        raise LinkPoolError(f"cannot listen on {where}: {exc.strerror or exc}") from None


def _given(**options: Any) -> dict[str, Any]:
    """The options that were given, so the others keep the callee's defaults."""
    return {name: value for name, value in options.items() if value is not None}


# --- refill, the daemon and the demo -------------------------------------------------------


@click.command("refill")
@click.option("--pool", "pool_name", metavar="NAME", help="Refill only this pool.")
@click.option(
    "--dry-run",
    is_flag=True,
    help="Show what would be created and how many API calls it takes; change nothing.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def refill_command(ctx: click.Context, pool_name: str | None, dry_run: bool, as_json: bool) -> None:
    """Provision links for every pool below its low water (or only --pool NAME).

    Safe to run from cron on many hosts at once: a pool another live process is refilling is
    skipped ("already running", naming it, exit 0); a lease whose holder died is taken over
    within its TTL (30 s). Exits 1 if any pool failed, or its lease is in doubt.
    """
    app = current_app(ctx)
    store = app.linkpool.store
    if pool_name is not None:
        app.linkpool.pool(pool_name)  # an unknown name fails before any call to Qualtrics
    stopping = StopOnSignal()
    if dry_run:
        report = refill_pools(app.settings, None, store, app.clock, pool_name, dry_run=True)
    else:
        with (
            qualtrics_client(app) as client,
            stopping,
            refill_progress(enabled=not as_json) as progress,
        ):
            check_access(client)
            client.stop_when(stopping.event)
            report = refill_pools(
                app.settings,
                client,
                store,
                app.clock,
                pool_name,
                progress=progress,
                stop=stopping.event,
            )
    if as_json:
        echo_json(report.to_dict())
        print_refill_errors(report)
    else:
        print_refill_report(report)
    stopping.exit_if_stopped(ctx)
    ctx.exit(report.exit_code)


@contextmanager
def refill_progress(*, enabled: bool) -> Iterator[Progress | None]:
    """A progress bar on stderr when it is a terminal; None (quiet) otherwise."""
    stream = sys.stderr
    if not enabled or not stream.isatty():
        yield None
        return
    lock = threading.Lock()
    with click.progressbar(length=1, label="provisioning links", file=stream) as bar:

        def update(done: int, planned: int) -> None:
            with lock:
                bar.length = max(planned, 1)
                bar.update(done - bar.pos)

        yield update


def print_refill_report(report: RefillReport) -> None:
    headers: tuple[str, ...]
    rows: list[tuple[Any, ...]]
    if report.dry_run:
        click.echo("dry run: nothing was changed")
        headers = ("pool", "claimable", "unfinished", "lists to create", "links", "API calls")
        rows = [
            (
                p.pool,
                p.claimable_before,
                p.lists_resumed,
                p.lists_planned,
                p.links_planned,
                sum(p.api_calls.values()),
            )
            for p in report.pools
        ]
        click.echo(format_table(headers, rows))
        click.echo("(API calls are an estimate; unfinished lists are resumed first)")
        return
    headers = (
        "pool",
        "claimable",
        "lists",
        "failed",
        "links added",
        "shortfall",
        "API calls",
        "result",
    )
    rows = [
        (
            p.pool,
            f"{p.claimable_before} -> {p.claimable_after}",
            p.lists_ready,
            p.lists_failed,
            p.links_added,
            p.shortfall,
            sum(p.api_calls.values()),
            p.skipped or ("failed" if p.failed else "stopped" if p.stopped else "ok"),
        )
        for p in report.pools
    ]
    click.echo(format_table(headers, rows))
    print_refill_errors(report)


def print_refill_errors(report: RefillReport) -> None:
    """Each pool's errors, once each, on stderr (with --json too: the report is on stdout)."""
    for pool in report.pools:
        for error in pool.errors:
            click.echo(f"linkpool: refill: {pool.pool}: {error}", err=True)


@click.command("run")
@click.option(
    "--metrics-port",
    type=click.IntRange(1, 65535),
    help="Serve Prometheus metrics on this port (see docs/service.md#metrics).",
)
@click.option(
    "--metrics-host",
    default="127.0.0.1",
    show_default=True,
    help="The address the metrics listen on.",
)
@pass_app
def run_command(app: App, metrics_port: int | None, metrics_host: str) -> None:
    """Run refill, gc and sync on their [schedule] in the foreground (for systemd).

    Any number of instances may run: one leads and runs the jobs, the others take over when
    it stops. SIGTERM or SIGINT stops it cleanly (leases released).
    """
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for noisy in ("httpx", "apscheduler"):  # one line per job run is ours to write
        logging.getLogger(noisy).setLevel(logging.WARNING)
    run_daemon(app.settings, clock=app.clock, metrics_port=metrics_port, metrics_host=metrics_host)


@click.command("demo")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    help="Keep the demo's database here (default: a temporary directory).",
)
def demo_command(directory: Path | None) -> None:
    """Watch a pool's whole life against a simulated Qualtrics: no account needed."""
    from linkpool.demo import run_demo  # here, so only the demo loads the simulator

    run_demo(directory, table=format_table, echo=click.echo)
