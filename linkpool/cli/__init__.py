"""The ``linkpool`` command: a thin click layer over the library.

Each command parses its options, calls one library function, and prints a table for people or
``--json`` for machines. Expected failures print one line on stderr and exit with the error's
code: 0 ok, 1 operational failure, 2 usage or configuration error, 3 pool exhausted.

The group is defined here and every command is registered here; the commands live in modules
by concern (``commands``: claims, stock and the jobs; ``service``: ``serve`` and ``keys``), which
take what they share from ``linkpool.cli.app``. A new command is a function in one of them (or
a new module) and one line below.
"""

from __future__ import annotations

import click

from linkpool.cli import commands, service
from linkpool.cli.app import App, LinkPoolGroup, quiet_library_logs


@click.group(cls=LinkPoolGroup)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    help="Configuration file (default: $LINKPOOL_CONFIG, else ./linkpool.toml).",
)
@click.version_option(package_name="linkpool")
@click.pass_context
def main(ctx: click.Context, config_path: str | None) -> None:
    """Pre-provisioned Qualtrics personal survey links, claimed in one database statement."""
    quiet_library_logs()
    ctx.obj = ctx.obj if isinstance(ctx.obj, App) else App(config_path)
    if config_path is not None:
        ctx.obj.config_path = config_path


for command in (
    commands.db,
    commands.claim,
    commands.claims,
    commands.status,
    commands.export,
    commands.archive_command,
    commands.gc_command,
    commands.doctor_command,
    commands.sync_command,
    commands.forget_command,
    commands.responses_command,
    commands.simulator_command,
    commands.refill_command,
    commands.run_command,
    commands.demo_command,
    service.serve_command,
    service.keys_group,
):
    main.add_command(command)

__all__ = ["App", "main"]
