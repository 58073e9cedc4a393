"""How a step of provisioning ends when it does not succeed (internal to refill)."""

from __future__ import annotations

from linkpool.errors import BadRequest, Interrupted, LinkPoolError, NotFound


class CannotComplete(LinkPoolError):
    """A list cannot be completed: abandon it."""


class LeftForOperator(LinkPoolError):
    """Whether a list exists on Qualtrics cannot be told: mark it failed, create nothing."""


class Stopped(Interrupted):
    """Refill was asked to stop (shutdown): the next run resumes this list."""


class ListTaken(LinkPoolError):
    """The list left the state this run expected (another job took it): leave it alone."""


class SurveyRefused(LinkPoolError):
    """Qualtrics makes no links for the pool's survey: no list is created for it this run."""


PERMANENT = (BadRequest, NotFound, CannotComplete)
"""Errors after which a list is abandoned; any other error leaves it for the next run."""

__all__: list[str] = []  # internal to linkpool.refill
