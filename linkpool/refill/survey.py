"""The pool's survey, asked about once per run before anything is created for it.

The distribution is the first provisioning call that names the survey, so a wrong or inactive
``survey_id`` used to be found out only after a mailing list was made and ``list_size``
placeholder contacts were imported into the directory, on every run (issue 11 point 4). One
``GET /surveys/{surveyId}`` before the run's first new list finds it out for the price of one
call; a run that creates no list makes none.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from linkpool.errors import NotFound, QualtricsError
from linkpool.qualtrics.client import QualtricsClient, survey_active
from linkpool.refill.failures import SurveyRefused

logger = logging.getLogger("linkpool.refill")


class SurveyCheck:
    """Whether Qualtrics makes links for a survey, asked once per survey and run (the list
    workers of a pool share one check). ``on_refused`` hears of each refusal once."""

    def __init__(
        self, client: QualtricsClient, on_refused: Callable[[SurveyRefused], None]
    ) -> None:
        self.client = client
        self.on_refused = on_refused
        self._refusals: dict[str, str | None] = {}
        self._lock = threading.Lock()

    def require_usable(self, survey_id: str) -> None:
        """Raise ``SurveyRefused`` when Qualtrics makes no links for ``survey_id``. Only the
        first call asks Qualtrics; an error of that call itself (a rate limit, a 5xx) is
        raised as it is, and the next call asks again."""
        with self._lock:  # held through the call: one question, however many workers wait
            if survey_id not in self._refusals:
                refusal = self._refusal(survey_id)
                self._refusals[survey_id] = refusal
                if refusal is not None:
                    self.on_refused(SurveyRefused(refusal))
            refusal = self._refusals[survey_id]
        if refusal is not None:
            raise SurveyRefused(refusal)

    def _refusal(self, survey_id: str) -> str | None:
        """Why no link can be made for the survey, or None when it is active or Qualtrics did
        not say (too thin a reason to refuse: the distribution still tells)."""
        try:
            survey = self.client.get_survey(survey_id)
        except NotFound as exc:
            message = (
                f"survey {survey_id} was not found: Qualtrics makes no links for it; fix the "
                "pool's survey_id (or the datacenter)"
            )
            return str(with_message(exc, message))
        active = survey_active(survey)
        if active is None:
            logger.debug("survey %s: Qualtrics did not say whether it is active", survey_id)
        if active is False:
            return (
                f"survey {survey_id} is not active: Qualtrics makes no links for it; activate "
                "it in Qualtrics or fix the pool's survey_id"
            )
        return None


def with_message(error: QualtricsError, message: str) -> QualtricsError:
    """``error`` (same class, status, errorCode, requestId) saying ``message`` first."""
    return type(error)(
        message,
        status_code=error.status_code,
        error_code=error.error_code,
        error_message=error.error_message,
        request_id=error.request_id,
        method=error.method,
        endpoint=error.endpoint,
    )


__all__: list[str] = []  # internal to linkpool.refill
