"""The commands over the ledger and the stock: ``db``, ``claim``, ``claims``, ``status``,
``export``, ``archive``, ``forget`` (registered by ``linkpool.cli``)."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from linkpool import health
from linkpool.archive import ARCHIVE_FORMATS
from linkpool.archive import archive as archive_claims
from linkpool.claimer import Claim
from linkpool.cli.app import (
    App,
    echo_json,
    format_table,
    pass_app,
)
from linkpool.config import PoolSettings
from linkpool.db import create_engine, current_revision, head_revision, upgrade
from linkpool.errors import InvalidClaim, LinkPoolError
from linkpool.export import FORMATS, export_to_file, write_claims
from linkpool.forget import forget as forget_recipient
from linkpool.jobs import intervals
from linkpool.pool import LinkPool
from linkpool.refill import refill_lease_name
from linkpool.status import pool_detail, pools_report
from linkpool.timespec import parse_instant


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
        app.qualtrics_client() as client,
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
    client = app.qualtrics_client() if settings.qualtrics is not None else None
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
