"""Serving the simulator over HTTP on loopback, for ``linkpool simulator`` and curl."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from linkpool.simulator.app import DEFAULT_TOKEN, Simulator

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765


class ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    """One thread per request, so concurrent clients (refill's workers) are served at once."""

    daemon_threads = True


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base's name
        pass


def start_server(
    simulator: Simulator, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, *, quiet: bool = True
) -> WSGIServer:
    """Bind a threading WSGI server for ``simulator`` and point its ``base_url`` at it.

    ``port=0`` picks a free port. The caller runs ``serve_forever`` and closes it.
    Request lines are logged to stderr unless ``quiet`` (they carry no token).
    """
    handler = QuietHandler if quiet else WSGIRequestHandler
    server = make_server(
        host, port, simulator, server_class=ThreadingWSGIServer, handler_class=handler
    )
    simulator.base_url = f"http://{host}:{server.server_port}/API/v3"
    return server


@contextmanager
def running(simulator: Simulator, host: str = DEFAULT_HOST, port: int = 0) -> Iterator[str]:
    """Serve ``simulator`` on a background thread for the ``with`` block; yields its base URL."""
    server = start_server(simulator, host, port)
    thread = threading.Thread(target=server.serve_forever, name="qualtrics-simulator", daemon=True)
    thread.start()
    try:
        yield simulator.base_url
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def config_block(simulator: Simulator, *, token_env: str = "QUALTRICS_API_TOKEN") -> str:
    """A ready-to-paste ``[qualtrics]`` table for linkpool.toml pointing at ``simulator``."""
    surveys = sorted(simulator.brand.surveys)
    token_hint = (
        f"export {token_env}={DEFAULT_TOKEN}"
        if simulator.token == DEFAULT_TOKEN
        else f"export {token_env}=<the --token you passed>"
    )
    lines = [
        "[qualtrics]",
        f'base_url = "{simulator.base_url}"',
        f'directory_id = "{simulator.directory_id}"',
        f'api_token_env = "{token_env}"',
        "",
        f"# {token_hint}",
        f"# surveys: {', '.join(surveys) or 'none'}",
    ]
    if surveys:
        lines += ["", "# [pools.demo]", f'# survey_id = "{surveys[0]}"']
    return "\n".join(lines)


def run_server(
    simulator: Simulator,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    *,
    echo: Callable[[str], None] | None = None,
) -> None:
    """What ``linkpool simulator`` runs: print how to reach ``simulator``, serve it until
    interrupted.

    ``echo`` prints a line (default: ``print``, flushed so a parent process sees it at once).
    """
    echo = echo or _print_flushed
    with start_server(simulator, host, port, quiet=False) as server:
        echo(f"Qualtrics simulator listening on {simulator.base_url} (Ctrl-C to stop)\n")
        echo(config_block(simulator))
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass


def _print_flushed(text: str) -> None:
    print(text, flush=True)
