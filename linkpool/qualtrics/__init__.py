"""Talking to Qualtrics: the client linkpool uses, its endpoints, throttle and retry policy.

The simulator it is tested against lives beside it, in ``linkpool.simulator``: nothing here
imports it, so the runtime never loads the test double.
"""

from linkpool.qualtrics.client import ImportJob, ImportStatus, QualtricsClient

__all__ = ["ImportJob", "ImportStatus", "QualtricsClient"]
