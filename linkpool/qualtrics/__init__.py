"""Talking to Qualtrics: the client linkpool uses, and the simulator it is tested against."""

from linkpool.qualtrics.client import ImportJob, ImportStatus, QualtricsClient

__all__ = ["ImportJob", "ImportStatus", "QualtricsClient"]
