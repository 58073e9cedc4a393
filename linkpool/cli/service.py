"""``linkpool serve`` and ``linkpool keys``: the commands of the HTTP service.

Registered on the main group by ``linkpool.cli``. Same style as the other commands: the App
from the context, ``--json`` for machines, tables for people, exit codes from
the errors.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from linkpool.cli.app import App, echo_json, format_table
from linkpool.config import resolve_config_path
from linkpool.service.keys import create_key, revoke_key
from linkpool.store import ApiKeyRecord


@click.command("serve")
@click.option("--host", help="Address to listen on (default: [service] host, 127.0.0.1).")
@click.option("--port", type=int, help="Port (default: [service] port, 8080).")
@click.option("--workers", type=click.IntRange(min=1), help="Worker processes (default 1).")
@click.pass_obj
def serve_command(app: App, host: str | None, port: int | None, workers: int | None) -> None:
    """Serve claims over HTTP (see docs/service.md). SIGTERM finishes requests, then exits 0."""
    from linkpool.service.server import serve

    app.linkpool  # noqa: B018 - fail here, once, on a bad config or an unmigrated database
    overrides: dict[str, Any] = {"host": host, "port": port, "workers": workers}
    settings = replace(
        app.settings.service,
        **{name: value for name, value in overrides.items() if value is not None},
    )
    source = app.settings.source or resolve_config_path(app.config_path)
    serve(Path(source), settings)


@click.group("keys")
def keys_group() -> None:
    """API keys of the service: create, list, revoke."""


@keys_group.command("create")
@click.argument("name")
@click.option(
    "--pool", "pools", multiple=True, help="A pool the key may use (repeat; default all)."
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def keys_create(app: App, name: str, pools: tuple[str, ...], as_json: bool) -> None:
    """Create a key NAME and print it, once: only its hash is stored."""
    for pool in pools:
        app.linkpool.pool(pool)  # an unknown name fails before a key exists
    record, key = create_key(app.linkpool.store, name, pools, now=app.clock.now())
    if as_json:
        echo_json({**record.to_dict(), "key": key})
        return
    click.echo(key)
    scope = ", ".join(record.pools) if record.pools is not None else "every pool"
    click.echo(f"key {name!r} for {scope}: store it now, it is not shown again", err=True)


@keys_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def keys_list(app: App, as_json: bool) -> None:
    """Every key: name, prefix, pools, created, revoked (never the key)."""
    records = app.linkpool.store.api_keys()
    if as_json:
        echo_json({"keys": [record.to_dict() for record in records]})
        return
    if not records:
        click.echo("no keys: create one with `linkpool keys create NAME`")
        return
    click.echo(format_table(("name", "prefix", "pools", "created", "revoked"), key_rows(records)))


def key_rows(records: list[ApiKeyRecord]) -> list[tuple[str, ...]]:
    return [
        (
            record.name,
            record.prefix + "…",
            ", ".join(record.pools) if record.pools is not None else "all",
            record.created_at.strftime("%Y-%m-%d %H:%M"),
            record.revoked_at.strftime("%Y-%m-%d %H:%M") if record.revoked_at else "-",
        )
        for record in records
    ]


@keys_group.command("revoke")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def keys_revoke(app: App, name: str, as_json: bool) -> None:
    """Revoke key NAME: every worker refuses it within [service] key_cache_ttl seconds."""
    record = revoke_key(app.linkpool.store, name, now=app.clock.now())
    ttl = app.settings.service.key_cache_ttl
    if as_json:
        echo_json(record.to_dict())
    else:
        click.echo(f"revoked key {name!r}; refused everywhere within {ttl:g} s")
