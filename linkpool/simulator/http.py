"""The HTTP side of the simulator: requests, Qualtrics' envelope, routing and pagination."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlencode

JsonObject = dict[str, Any]

API_PREFIX = "/API/v3"


class ApiError(Exception):
    """An error answer, raised anywhere in a handler and rendered in Qualtrics' error envelope."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str,
        *,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})


def bad_request(message: str, code: str = "RP_0.1") -> ApiError:
    return ApiError(400, message, code)


def not_found(message: str, code: str = "RP_0.2") -> ApiError:
    return ApiError(404, message, code)


@dataclass
class Request:
    method: str
    path: str
    """The path below ``/API/v3``, e.g. ``/distributions/EMD_x/links``."""
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    root_url: str
    """The URL up to and including ``/API/v3`` as the caller reached it, for ``nextPage``."""
    params: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_environ(cls, environ: Mapping[str, Any]) -> Request:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length > 0 else b""
        query = {
            key: values[-1] for key, values in parse_qs(environ.get("QUERY_STRING", "")).items()
        }
        headers = {
            key[5:].replace("_", "-").lower(): value
            for key, value in environ.items()
            if key.startswith("HTTP_")
        }
        if environ.get("CONTENT_TYPE"):
            headers["content-type"] = environ["CONTENT_TYPE"]
        host = environ.get("HTTP_HOST") or f"{environ['SERVER_NAME']}:{environ['SERVER_PORT']}"
        root_url = f"{environ.get('wsgi.url_scheme', 'http')}://{host}{API_PREFIX}"
        return cls(
            method=environ["REQUEST_METHOD"].upper(),
            path=environ.get("PATH_INFO", ""),
            query=query,
            headers=headers,
            body=body,
            root_url=root_url,
        )

    def json_object(self) -> JsonObject:
        """The body as a JSON object; anything else is a 400 like Qualtrics'."""
        try:
            value = json.loads(self.body or b"null")
        except (ValueError, UnicodeDecodeError):
            raise bad_request("Invalid JSON in request body.") from None
        if not isinstance(value, dict):
            raise bad_request("Request body must be a JSON object.")
        return value

    def page_url(self, **query: str | int) -> str:
        """A full URL to this path with ``query``: what ``nextPage`` holds."""
        return f"{self.root_url}{self.path}?{urlencode(query)}"


@dataclass
class Response:
    status: int
    body: JsonObject
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None
    """A body that is not JSON (an export's zip file), sent as ``content_type``."""
    content_type: str = "application/json"

    def render(self) -> tuple[str, list[tuple[str, str]], bytes]:
        payload = (
            self.raw
            if self.raw is not None
            else json.dumps(self.body, separators=(",", ":")).encode()
        )
        headers = [
            ("Content-Type", self.content_type),
            ("Content-Length", str(len(payload))),
            *self.headers.items(),
        ]
        return status_line(self.status), headers, payload


def status_line(status: int) -> str:
    return f"{status} {HTTPStatus(status).phrase}"


def success(result: JsonObject | None, request_id: str, status: int = 200) -> Response:
    meta = {"httpStatus": f"{status} - {HTTPStatus(status).phrase}", "requestId": request_id}
    body: JsonObject = {"meta": meta} if result is None else {"result": result, "meta": meta}
    return Response(status, body)


def failure(error: ApiError, request_id: str) -> Response:
    meta = {
        "httpStatus": f"{error.status} - {HTTPStatus(error.status).phrase}",
        "requestId": request_id,
        "error": {"errorMessage": error.message, "errorCode": error.code, **error.extra},
    }
    return Response(error.status, {"meta": meta}, dict(error.headers))


Handler = Callable[[Request], Response]


class Route:
    """``METHOD /path/{param}/…``; ``key`` is the templated form counted in ``calls``."""

    def __init__(self, method: str, template: str, handler: Handler) -> None:
        self.method = method
        self.template = template
        self.handler = handler
        self.key = f"{method} {template}"
        pattern = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", template)
        self._pattern = re.compile(f"^{pattern}$")

    def match(self, path: str) -> dict[str, str] | None:
        found = self._pattern.match(path)
        return found.groupdict() if found else None


def find_route(routes: Iterable[Route], method: str, path: str) -> tuple[Route, dict[str, str]]:
    path_known = False
    for route in routes:
        params = route.match(path)
        if params is None:
            continue
        if route.method == method:
            return route, params
        path_known = True
    if path_known:
        raise ApiError(405, f"Method {method} is not allowed on this resource.", "RP_0.5")
    raise not_found("The requested resource does not exist.", "RP_0.4")


# --- JSON body checks ---------------------------------------------------------------------


def reject_unknown_keys(body: Mapping[str, Any], allowed: Iterable[str], where: str = "") -> None:
    unknown = [key for key in body if key not in set(allowed)]
    if unknown:
        raise bad_request(f"Unexpected json key provided: {where}{unknown[0]}")


def require_keys(body: Mapping[str, Any], required: Iterable[str]) -> None:
    for key in required:
        if key not in body:
            raise bad_request(f"Missing required json key: {key}")


def reject_nulls(value: Any, where: str = "") -> None:
    """Qualtrics refuses ``null`` values (omit the key instead)."""
    if value is None:
        raise bad_request(f"Null value provided for {where or 'request body'}; omit the key.")
    if isinstance(value, dict):
        for key, item in value.items():
            reject_nulls(item, f"{where}.{key}" if where else key)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            reject_nulls(item, f"{where}[{index}]")


def require_string(body: Mapping[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise bad_request(f"Invalid value for {key}: expected a non-empty string.")
    return value


# --- pagination ---------------------------------------------------------------------------


def page_size(request: Request, *, default: int, maximum: int) -> int:
    raw = request.query.get("pageSize")
    if raw is None:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= maximum:
        raise bad_request(f"Invalid pageSize: must be an integer from 1 to {maximum}.")
    return int(raw)


def encode_skip_token(offset: int) -> str:
    return base64.urlsafe_b64encode(f"offset:{offset}".encode()).decode().rstrip("=")


def decode_skip_token(request: Request) -> int:
    token = request.query.get("skipToken")
    if token is None:
        return 0
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        kind, _, offset = text.partition(":")
        if kind == "offset" and offset.isdigit():
            return int(offset)
    except ValueError:
        pass
    raise bad_request("Invalid skipToken.")


def paginate(
    request: Request,
    elements: Sequence[Any],
    size: int,
    keep: Iterable[str] = (),
    render: Callable[[Any], JsonObject] | None = None,
) -> JsonObject:
    """One page of ``elements`` and a ``nextPage`` URL (or ``None`` on the last page).

    ``keep`` names query parameters that the next page's URL carries over; ``render`` turns
    each element of the page (only) into its JSON, for long listings.
    """
    offset = decode_skip_token(request)
    page = list(elements[offset : offset + size])
    if render is not None:
        page = [render(element) for element in page]
    next_page = None
    if offset + size < len(elements):
        query: dict[str, str | int] = {k: request.query[k] for k in keep if k in request.query}
        if "pageSize" in request.query:
            query["pageSize"] = size
        query["skipToken"] = encode_skip_token(offset + size)
        next_page = request.page_url(**query)
    return {"elements": page, "nextPage": next_page}
