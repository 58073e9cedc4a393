"""The jobs as commands: ``refill``, ``gc``, ``sync``, ``responses``, ``doctor`` and ``run``,
the daemon that schedules them (registered by ``linkpool.cli``). A job command checks
Qualtrics access first, stops between steps on SIGINT/SIGTERM (``StopOnSignal``) and prints
its report as a table or ``--json``."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import click

from linkpool.cli.app import (
    EXIT_FAILURE,
    App,
    current_app,
    echo_json,
    format_table,
    pass_app,
)
from linkpool.clock import Clock
from linkpool.doctor import diagnose
from linkpool.errors import LeaseHeld
from linkpool.gc import GcReport, collect, delete_orphans, find_orphans
from linkpool.qualtrics.client import TRANSIENT_ERRORS, QualtricsClient
from linkpool.refill import Progress, RefillReport
from linkpool.refill import refill as refill_pools
from linkpool.responses import track_responses
from linkpool.scheduler import run_daemon
from linkpool.store import Store
from linkpool.sync import sync as sync_write_backs


def skipped_as_running(exc: LeaseHeld, *, as_json: bool) -> None:
    """Another process is doing this job: one line (or a JSON document), exit 0."""
    if as_json:
        echo_json({"skipped": "already running", "holder": str(exc)})
    else:
        click.echo(f"linkpool: {exc}", err=True)


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
    with app.qualtrics_client() as client, StopOnSignal() as stopping:
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
    with app.qualtrics_client() as client:
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
    with app.qualtrics_client() as client, StopOnSignal() as stopping:
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
    with app.qualtrics_client() as client:
        report = track_responses(app.settings, client, store, app.clock, pool_name=pool_name)
    if as_json:
        echo_json(report.to_dict())
    else:
        click.echo(report.summary())
        for error in report.errors:
            click.echo(f"linkpool: responses: {error}", err=True)
    if report.errors:
        ctx.exit(EXIT_FAILURE)


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
            app.qualtrics_client() as client,
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
