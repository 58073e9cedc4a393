"""An in-memory Qualtrics for tests, the demo and benchmarks: strict like the real API.

Mount it in-process (``Simulator().transport()``) or serve it over HTTP (``running``,
``run_server``; ``linkpool simulator`` on the command line). See docs/simulator.md.

It sits beside ``linkpool.qualtrics`` and may import the client's endpoint table and limits;
nothing in the runtime (the client, the jobs, the daemon) imports it.
"""

from linkpool.simulator.app import (
    DEFAULT_DIRECTORY_ID,
    DEFAULT_SURVEY_ID,
    DEFAULT_TOKEN,
    LinkCheck,
    Simulator,
)
from linkpool.simulator.faults import Faults
from linkpool.simulator.server import config_block, run_server, running, start_server
from linkpool.simulator.state import SurveyResponse

__all__ = [
    "DEFAULT_DIRECTORY_ID",
    "DEFAULT_SURVEY_ID",
    "DEFAULT_TOKEN",
    "Faults",
    "LinkCheck",
    "Simulator",
    "SurveyResponse",
    "config_block",
    "run_server",
    "running",
    "start_server",
]
