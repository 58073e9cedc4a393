"""The commands that stand beside linkpool: ``simulator`` (the fake Qualtrics) and ``demo``
(registered by ``linkpool.cli``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from linkpool.cli.app import (
    format_table,
)
from linkpool.errors import LinkPoolError


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
