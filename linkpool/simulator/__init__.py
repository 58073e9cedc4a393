"""An in-memory Qualtrics for tests, the demo and benchmarks: strict like the real API.

Mount it in-process (``Simulator().transport()``) or serve it over HTTP (``serve``,
``run_server``; ``linkpool simulator`` on the command line). See docs/simulator.md.
"""

from linkpool.simulator.app import LinkCheck, Simulator
from linkpool.simulator.faults import Faults
from linkpool.simulator.server import (
    config_block,
    run_server,
    running,
    serve,
    start_server,
)
from linkpool.simulator.state import SurveyResponse

__all__ = [
    "Faults",
    "LinkCheck",
    "Simulator",
    "SurveyResponse",
    "config_block",
    "run_server",
    "running",
    "serve",
    "start_server",
]
