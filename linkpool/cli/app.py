"""What every command module of ``linkpool.cli`` shares: the App, the error-to-exit-code group,
the table and JSON printers. Command modules import from here, never from ``linkpool.cli``
itself (which imports them to register their commands)."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from functools import cached_property
from typing import Any

import click
import httpx

from linkpool.clock import Clock, SystemClock
from linkpool.config import Settings, load_settings
from linkpool.errors import LinkPoolError
from linkpool.pool import LinkPool
from linkpool.qualtrics.client import QualtricsClient

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_EXHAUSTED = 0, 1, 2, 3


class App:
    """What commands share: settings loaded on first use, one engine, one clock.

    ``transport``, when set, carries every Qualtrics request (tests mount the simulator here).
    """

    def __init__(
        self,
        config_path: str | None,
        clock: Clock | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.config_path = config_path
        self.clock: Clock = clock or SystemClock()
        self.transport = transport

    @cached_property
    def settings(self) -> Settings:
        return load_settings(self.config_path)

    @cached_property
    def linkpool(self) -> LinkPool:
        return LinkPool.from_settings(self.settings, clock=self.clock)

    def qualtrics_client(self) -> QualtricsClient:
        """A client from ``[qualtrics]`` (the token from its environment variable), through
        ``transport`` when one is set."""
        return QualtricsClient.from_settings(
            self.settings.require_qualtrics(), transport=self.transport, clock=self.clock
        )


class LinkPoolGroup(click.Group):
    """Turns LinkPoolError into one line on stderr and its exit code; never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LinkPoolError as exc:
            kind = "" if exc.exit_code == EXIT_OK else "error: "  # "already running": no error
            click.echo(f"linkpool: {kind}{exc}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("linkpool: interrupted", err=True)
            ctx.exit(130)


def quiet_library_logs() -> None:
    """A command reports through its own lines; the library's log records (a failure it
    also puts in its report) must not reach stderr a second time through Python's last-resort
    handler. ``linkpool run`` configures logging and shows them."""
    library = logging.getLogger("linkpool")
    if not any(isinstance(handler, logging.NullHandler) for handler in library.handlers):
        library.addHandler(logging.NullHandler())


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain aligned text table: numbers right-aligned, text left-aligned."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    numeric = [all(isinstance(row[i], int) for row in rows) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        padded = (
            cell.rjust(width) if is_number else cell.ljust(width)
            for cell, width, is_number in zip(row, widths, numeric, strict=True)
        )
        return "  ".join(padded).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(cells[0]), rule, *(line(row) for row in cells[1:])])


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True, default=str))


pass_app = click.make_pass_decorator(App)


def current_app(ctx: click.Context) -> App:
    """The App of a command that needs its click context too (exit codes, confirmations)."""
    app = ctx.find_object(App)
    if app is None:
        raise click.UsageError("linkpool commands run under the `linkpool` group")
    return app
