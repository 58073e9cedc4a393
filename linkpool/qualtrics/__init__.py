"""Talking to Qualtrics: the client linkpool uses, and the simulator it is tested against."""

from linkpool.qualtrics.client import ImportJob, ImportStatus, QualtricsClient
from linkpool.qualtrics.simulator import Faults, LinkCheck, Simulator

__all__ = ["Faults", "ImportJob", "ImportStatus", "LinkCheck", "QualtricsClient", "Simulator"]
