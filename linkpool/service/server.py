"""Runs the service under uvicorn: ``linkpool serve``.

Each worker is its own process (uvicorn spawns them) and builds its own LinkPool, so its own
engine and connection pool, from the configuration file named by $LINKPOOL_CONFIG. On SIGTERM
uvicorn stops accepting, lets requests in flight finish (up to ``graceful_timeout``) and exits 0.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn

from linkpool.config import CONFIG_ENV, ServiceSettings
from linkpool.service.metrics import MULTIPROC_ENV

APP_FACTORY = "linkpool.service.app:app_from_environment"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def log_config() -> dict[str, Any]:
    """uvicorn's own lines and the access log, on stderr; uvicorn's access log is off (it would
    print paths with no key name, pool or link)."""
    handler = {"class": "logging.StreamHandler", "formatter": "plain", "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": LOG_FORMAT}},
        "handlers": {"stderr": handler},
        "loggers": {
            "uvicorn": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
            "linkpool": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
            # psycopg's pool says when it discards a broken connection or cannot reconnect.
            "psycopg": {"handlers": ["stderr"], "level": "WARNING", "propagate": False},
        },
    }


@contextmanager
def multiprocess_metrics(workers: int) -> Iterator[None]:
    """With several workers, a fresh prometheus_client multiprocess directory for this run."""
    if workers < 2:
        os.environ.pop(MULTIPROC_ENV, None)
        yield
        return
    directory = tempfile.mkdtemp(prefix="linkpool-metrics-")
    os.environ[MULTIPROC_ENV] = directory
    try:
        yield
    finally:
        os.environ.pop(MULTIPROC_ENV, None)
        shutil.rmtree(directory, ignore_errors=True)


def serve(config_path: Path, service: ServiceSettings) -> None:
    """Serve until SIGTERM or SIGINT. ``config_path`` is what every worker loads."""
    os.environ[CONFIG_ENV] = str(config_path.resolve())
    # uvicorn re-raises the signal it caught once it has shut down gracefully; a SIGTERM that
    # ended a clean shutdown is a success for systemd and for orchestrators: exit 0.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with multiprocess_metrics(service.workers):
        uvicorn.run(
            APP_FACTORY,
            factory=True,
            host=service.host,
            port=service.port,
            workers=service.workers if service.workers > 1 else None,
            access_log=False,
            log_config=log_config(),
            timeout_graceful_shutdown=int(service.graceful_timeout),
            server_header=False,
        )
