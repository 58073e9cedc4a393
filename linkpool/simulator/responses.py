"""The response endpoints: the async JSON export (start, progress, zipped file) and the
updates of recorded responses (bulk, polled; one at a time). Strict like the rest.

``ResponseHandlers`` is mixed into ``Simulator`` beside ``ApiHandlers``.
"""

from __future__ import annotations

import io
import json
import random
import zipfile
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from linkpool.clock import Clock
from linkpool.config import MAX_RESPONSE_VALUE
from linkpool.qualtrics import endpoints as api
from linkpool.simulator.faults import Faults
from linkpool.simulator.http import (
    ApiError,
    Handler,
    JsonObject,
    Request,
    Response,
    Route,
    bad_request,
    not_found,
    reject_nulls,
    reject_unknown_keys,
    require_keys,
    require_string,
)
from linkpool.simulator.state import Brand, ExportJob, SurveyResponse, UpdateJob

EXPORT_KEYS = (
    "format",
    "startDate",
    "endDate",
    "limit",
    "useLabels",
    "exportResponsesInProgress",
    "compress",
    "timeZone",
    "questionIds",
    "embeddedDataIds",
    "surveyMetadataIds",
    "filterId",
    "includeDisplayOrder",
    "breakoutSets",
    "seenUnansweredRecode",
    "multiselectSeenUnansweredRecode",
    "formatDecimalAsComma",
    "newlineReplacement",
    "sortByLastModifiedDate",
)
EXPORT_FORMATS = ("csv", "tsv", "json", "ndjson", "spss", "xml")
UPDATE_POLLS = 2
"""Status polls a bulk update takes to complete."""


class ResponseHandlers:
    brand: Brand
    clock: Clock
    faults: Faults
    fault_random: random.Random
    ok: Callable[..., Response]
    draw: Callable[[float], bool]

    def response_routes(self) -> list[Route]:
        handlers: list[tuple[api.Endpoint, Handler]] = [
            (api.START_RESPONSE_EXPORT, self.start_export),
            (api.GET_RESPONSE_EXPORT, self.get_export),
            (api.GET_RESPONSE_EXPORT_FILE, self.get_export_file),
            (api.START_RESPONSE_UPDATE, self.start_update),
            (api.GET_RESPONSE_UPDATE, self.get_update),
            (api.UPDATE_RESPONSE, self.update_response),
        ]
        return [Route(endpoint.method, endpoint.path, handler) for endpoint, handler in handlers]

    def survey(self, request: Request) -> str:
        survey_id = request.params["surveyId"]
        if survey_id not in self.brand.surveys:
            raise not_found(f"Survey not found: {survey_id}")
        return survey_id

    # --- export -----------------------------------------------------------------------------

    def start_export(self, request: Request) -> Response:
        survey_id = self.survey(request)
        body = request.json_object()
        reject_unknown_keys(body, EXPORT_KEYS)
        reject_nulls(body)
        require_keys(body, ("format",))
        if body["format"] not in EXPORT_FORMATS:
            raise bad_request(f"Invalid value for format: expected one of {EXPORT_FORMATS}.")
        if body["format"] != "json":
            raise bad_request("The simulator exports format json only.")
        job = ExportJob(
            id=self.brand.new_id("ES_"),
            survey_id=survey_id,
            start=optional_date(body, "startDate"),
            end=optional_date(body, "endDate"),
            polls_needed=self.faults.export_polls,
        )
        self.brand.exports[job.id] = job
        return self.ok({"progressId": job.id, "percentComplete": 0.0, "status": "inProgress"})

    def get_export(self, request: Request) -> Response:
        survey_id = self.survey(request)
        job = self.brand.exports.get(request.params["progressId"])
        if job is None or job.survey_id != survey_id:
            raise not_found(f"Export not found: {request.params['progressId']}")
        job.polls += 1
        if job.file_id is None and not job.failed and job.polls >= job.polls_needed:
            if self.draw(self.faults.export_failure_rate):
                job.failed = True
            else:
                job.file_id = f"{job.id}-file"
                self.brand.export_files[job.file_id] = self.export_file(job)
        if job.failed:
            return self.ok({"percentComplete": 0.0, "status": "failed"})
        if job.file_id is not None:
            return self.ok({"percentComplete": 100.0, "status": "complete", "fileId": job.file_id})
        percent = round(100.0 * job.polls / job.polls_needed, 1)
        return self.ok({"percentComplete": percent, "status": "inProgress"})

    def export_file(self, job: ExportJob) -> bytes:
        """The zip of one JSON document ``{"responses": [...]}``, as recorded right now.

        Update jobs run on Qualtrics' side whether or not anyone polls them: by the time an
        export is built, every update started before it has been applied."""
        for update in self.brand.updates.values():
            if update.survey_id == job.survey_id:
                self.apply_update(update)
        elements = [
            response.as_element()
            for response in self.brand.responses
            if response.survey_id == job.survey_id
            and (job.start is None or response.recorded_at >= job.start)
            and (job.end is None or response.recorded_at < job.end)
        ]
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(f"{job.survey_id}.json", json.dumps({"responses": elements}))
        return buffer.getvalue()

    def get_export_file(self, request: Request) -> Response:
        self.survey(request)
        payload = self.brand.export_files.get(request.params["fileId"])
        if payload is None:
            raise not_found(f"File not found: {request.params['fileId']}")
        return Response(200, {}, raw=payload, content_type="application/zip")

    # --- updates ----------------------------------------------------------------------------

    def start_update(self, request: Request) -> Response:
        survey_id = self.survey(request)
        body = request.json_object()
        reject_unknown_keys(body, ("updates", "ignoreMissingResponses"))
        reject_nulls(body)
        require_keys(body, ("updates",))
        if self.faults.refuse_bulk_updates:
            raise bad_request("Bulk response updates are not enabled for this brand.", "RP_0.7")
        updates = body["updates"]
        if not isinstance(updates, list) or not updates:
            raise bad_request("Invalid value for updates: expected a non-empty array.")
        ignore_missing = body.get("ignoreMissingResponses", False)
        for index, update in enumerate(updates):
            self.check_update(update, survey_id, f"updates[{index}].", ignore_missing)
        job = UpdateJob(self.brand.new_id("PGR_"), survey_id, updates, UPDATE_POLLS)
        self.brand.updates[job.id] = job
        if self.draw(self.faults.lost_update_rate):
            raise ApiError(504, "Gateway timeout.", "GATEWAY_TIMEOUT")
        return self.ok({"progressId": job.id})

    def check_update(self, update: Any, survey_id: str, where: str, ignore_missing: bool) -> None:
        if not isinstance(update, dict):
            raise bad_request(f"Invalid value for {where.rstrip('.')}: expected an object.")
        reject_unknown_keys(update, ("responseId", "embeddedData"), where=where)
        require_keys(update, ("responseId", "embeddedData"))
        response_id = require_string(update, "responseId")
        check_embedded_data(update["embeddedData"], where)
        if not ignore_missing and self.find_response(survey_id, response_id) is None:
            raise bad_request(f"Response not found: {response_id}")

    def get_update(self, request: Request) -> Response:
        survey_id = self.survey(request)
        job = self.brand.updates.get(request.params["progressId"])
        if job is None or job.survey_id != survey_id:
            raise not_found(f"Update not found: {request.params['progressId']}")
        job.polls += 1
        if job.polls >= job.polls_needed:
            self.apply_update(job)
        percent = 100.0 if job.complete else round(100.0 * job.polls / job.polls_needed, 1)
        status = "complete" if job.complete else "inProgress"
        return self.ok({"percentComplete": percent, "status": status})

    def apply_update(self, job: UpdateJob) -> None:
        if job.complete:
            return
        for update in job.updates:
            found = self.find_response(job.survey_id, update["responseId"])
            if found is not None:
                found.embedded_data.update(update["embeddedData"])
        job.complete = True

    def update_response(self, request: Request) -> Response:
        body = request.json_object()
        reject_unknown_keys(body, ("surveyId", "embeddedData", "resetRecordedDate"))
        reject_nulls(body)
        require_keys(body, ("surveyId", "embeddedData"))
        survey_id = require_string(body, "surveyId")
        if "resetRecordedDate" in body and not isinstance(body["resetRecordedDate"], bool):
            raise bad_request("Invalid value for resetRecordedDate: expected true or false.")
        check_embedded_data(body["embeddedData"], "")
        found = self.find_response(survey_id, request.params["responseId"])
        if found is None:
            raise not_found(f"Response not found: {request.params['responseId']}")
        found.embedded_data.update(body["embeddedData"])
        if body.get("resetRecordedDate"):
            found.recorded_at = self.clock.now()
        return self.ok()

    def find_response(self, survey_id: str, response_id: str) -> SurveyResponse | None:
        for response in self.brand.responses:
            if response.id == response_id and response.survey_id == survey_id:
                return response
        return None


def check_embedded_data(value: Any, where: str) -> None:
    if not isinstance(value, dict) or not value:
        raise bad_request(f"Invalid value for {where}embeddedData: expected a non-empty object.")
    for name, item in value.items():
        if not isinstance(item, str):
            raise bad_request(f"Invalid value for {where}embeddedData.{name}: expected text.")
        if len(item) > MAX_RESPONSE_VALUE:
            raise bad_request(
                f"Invalid value for {where}embeddedData.{name}: at most "
                f"{MAX_RESPONSE_VALUE} characters."
            )


def optional_date(body: JsonObject, key: str) -> datetime | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, str):
        for form in ("%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S.%fZ"):
            try:
                return datetime.strptime(value, form).replace(tzinfo=UTC)
            except ValueError:
                continue
    raise bad_request(f"Invalid value for {key}: expected ISO 8601 like '2026-12-31T00:00:00Z'.")
