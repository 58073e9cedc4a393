"""The ``linkpool`` command: a thin click layer over the library.

Each command parses its options, calls one library function, and prints a table for people or
``--json`` for machines. Expected failures print one line on stderr and exit with the error's
code: 0 ok, 1 operational failure, 2 usage or configuration error, 3 pool exhausted, 4 a
``status --check`` check failed, 130/143 stopped by SIGINT/SIGTERM (docs/errors.md).

The group is defined here and every command is registered here; the commands live in modules
by concern (``ledger``: claims and stock; ``jobs``: the jobs and the daemon; ``tools``: the
simulator and the demo; ``service``: ``serve`` and ``keys``), which take what they share from ``linkpool.cli.app``. A new command is a function in one of them (or
a new module) and one line below.
"""

from __future__ import annotations

import click

from linkpool.cli import jobs, ledger, service, tools
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
    ledger.db,
    ledger.claim,
    ledger.claims,
    ledger.status,
    ledger.export,
    ledger.archive_command,
    jobs.gc_command,
    jobs.doctor_command,
    jobs.sync_command,
    ledger.forget_command,
    jobs.responses_command,
    tools.simulator_command,
    jobs.refill_command,
    jobs.run_command,
    tools.demo_command,
    service.serve_command,
    service.keys_group,
):
    main.add_command(command)

__all__ = ["App", "main"]
