"""The ASGI application of ``linkpool serve`` (Starlette).

Every answer is JSON; every error is ``{"error": {"type": ..., "message": ...}}`` where
``type`` is the linkpool error class (or, for what the library has no class for, the names
below: Unauthorized, Forbidden, UnsupportedMediaType, PayloadTooLarge, ClaimNotFound, NotFound,
InternalError).

On PostgreSQL the claim statement is sent from the event loop (``AsyncClaims``, on its own pool
of ``[service] connections`` async connections): no thread hop per claim. What it cannot
answer (no claimable link, a repeated idempotency key, no connection free) and every other
blocking call (counts, key reloads, readiness, scrapes) runs through ``Service.run_blocking``
on the service's own thread pool, one thread per pooled database connection (``[service]
connections``; one on SQLite, where every claim takes that path): a call never waits for a
connection, and the pool never opens and closes overflow connections under load. The key is
checked on the event loop against the cached key table (a thread only to reload it).
"""

from __future__ import annotations

import asyncio
import functools
import gc
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy.engine import Engine, make_url
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from linkpool.config import ServiceSettings, Settings, load_settings
from linkpool.db import check_migrated, create_engine
from linkpool.errors import (
    DatabaseError,
    IdempotencyConflict,
    InvalidClaim,
    LinkPoolError,
    PoolExhausted,
    UnknownPool,
)
from linkpool.pool import MAX_KEY_LENGTH, Claim, LinkPool
from linkpool.service.keys import KeyCache
from linkpool.service.metrics import CONTENT_TYPE, ServiceMetrics
from linkpool.service.openapi import openapi_document
from linkpool.status import pools_report
from linkpool.store import ApiKeyRecord

if TYPE_CHECKING:
    from linkpool.store.async_claim import AsyncClaims

T = TypeVar("T")
ACCESS_LOG = logging.getLogger("linkpool.service.access")
LOG = logging.getLogger("linkpool.service")
CLAIM_FIELDS = ("recipient", "data")
STATUS_OF: Mapping[type[LinkPoolError], int] = {
    UnknownPool: 404,
    InvalidClaim: 422,
    IdempotencyConflict: 409,
    PoolExhausted: 503,
    DatabaseError: 503,
}


class Problem(Exception):
    """An answer other than success, for what has no linkpool error class."""

    def __init__(self, status: int, kind: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.kind, self.message, self.extra = status, kind, message, extra


def error_body(kind: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"type": kind, "message": message, **extra}}


def error_context(exc: LinkPoolError) -> dict[str, Any]:
    """The fields a client needs to rebuild the exception (RemotePool does)."""
    if isinstance(exc, PoolExhausted):
        return {"pool": exc.pool, "too_old": exc.too_old}
    if isinstance(exc, IdempotencyConflict):
        return {"pool": exc.pool, "key": exc.key}
    if isinstance(exc, UnknownPool):
        return {"pool": exc.pool}
    return {}


class Service:
    """The endpoints, over one LinkPool, one key cache and one metrics registry."""

    def __init__(self, lp: LinkPool, settings: ServiceSettings) -> None:
        self.lp = lp
        self.settings = settings
        self.keys = KeyCache(lp.store, ttl=settings.key_cache_ttl)
        self.metrics = ServiceMetrics(lp)
        threads = service_threads(lp.engine, settings)
        self.executor = ThreadPoolExecutor(threads, thread_name_prefix="linkpool")
        self.loop_claims = loop_claims(lp, settings)

    async def run_blocking(self, function: Callable[..., T], *args: Any) -> T:
        """``function(*args)`` on the service's thread pool (see the module's docstring)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, functools.partial(function, *args))

    async def start(self) -> None:
        if self.loop_claims is not None:
            await self.loop_claims.open()

    async def stop(self) -> None:
        if self.loop_claims is not None:
            await self.loop_claims.close()
        self.executor.shutdown(wait=True)

    # --- claims --------------------------------------------------------------------------

    async def claim(self, request: Request) -> Response:
        started = time.perf_counter()
        pool = request.path_params["pool"]
        await self.authorize(request, pool)
        key = idempotency_key(request)
        recipient, data = parse_claim_body(await read_json(request, self.settings), key)
        outcome = "error"
        try:
            answer = await self.claim_on_loop(pool, recipient, key, data)
            if answer is None:
                answer = await self.run_blocking(self.claim_and_encode, pool, recipient, key, data)
            claim, body = answer
            outcome = "replayed" if claim.replayed else "ok"
        except PoolExhausted:
            outcome = "exhausted"
            raise
        except IdempotencyConflict:
            outcome = "conflict"
            raise
        finally:
            if pool in self.lp.pools:  # unknown names would grow the label set without bound
                self.metrics.observe_claim(pool, outcome, time.perf_counter() - started)
        request.state.link_id = claim.link_id
        return Response(body, 200 if claim.replayed else 201, media_type="application/json")

    async def claim_on_loop(
        self, pool: str, recipient: str, key: str | None, data: dict[str, Any] | None
    ) -> tuple[Claim, bytes] | None:
        """On PostgreSQL, the claim statement sent from the event loop (``AsyncClaims``);
        None where the thread path answers instead (no link, a repeated key, no connection)."""
        if self.loop_claims is None:
            return None
        request = self.lp.claim_request(pool, recipient=recipient, key=key, data=data)
        record = await self.loop_claims.claim(request)
        if record is None:
            return None
        claim = self.lp.claim_of(record)
        return claim, encode(claim.to_dict())

    def claim_and_encode(
        self, pool: str, recipient: str, key: str | None, data: dict[str, Any] | None
    ) -> tuple[Claim, bytes]:
        claim = self.lp.claim(pool, recipient=recipient, key=key, data=data)
        return claim, encode(claim.to_dict())

    async def claim_by_key(self, request: Request) -> Response:
        pool, key = request.path_params["pool"], request.path_params["key"]
        await self.authorize(request, pool)
        claim = await self.run_blocking(self.lp.claim_by_key, pool, key)
        if claim is None:
            raise Problem(404, "ClaimNotFound", f"no claim in pool {pool!r} with that key")
        request.state.link_id = claim.link_id
        return claim_response(claim, 200)

    # --- pools ---------------------------------------------------------------------------

    async def pools(self, request: Request) -> Response:
        key = await self.authenticate(request)
        report = await self.run_blocking(
            pools_report, self.lp.pools, self.lp.counts, key.pools, self.lp.response_counts
        )
        return JSONResponse({"pools": report})

    async def pool(self, request: Request) -> Response:
        pool = request.path_params["pool"]
        await self.authorize(request, pool)
        self.lp.pool(pool)
        report = await self.run_blocking(
            pools_report, self.lp.pools, self.lp.counts, [pool], self.lp.response_counts
        )
        return JSONResponse({"pool": pool, **report[pool]})

    # --- operations ----------------------------------------------------------------------

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        await self.run_blocking(check_migrated, self.lp.engine)
        return JSONResponse({"status": "ready"})

    async def metrics_text(self, request: Request) -> Response:
        body = await self.run_blocking(self.metrics.scrape)
        return Response(body, media_type=CONTENT_TYPE)

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(openapi_document())

    # --- keys ----------------------------------------------------------------------------

    async def authenticate(self, request: Request) -> ApiKeyRecord:
        scheme, _, presented = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            raise Problem(401, "Unauthorized", "send an API key as 'Authorization: Bearer <key>'")
        decided, key = self.keys.cached(presented.strip())
        if not decided:
            key = await self.run_blocking(self.keys.authenticate, presented.strip())
        if key is None:
            raise Problem(401, "Unauthorized", "the API key is not valid or was revoked")
        request.state.key_name = key.name
        return key

    async def authorize(self, request: Request, pool: str) -> ApiKeyRecord:
        request.state.pool = pool
        key = await self.authenticate(request)
        if not key.allows(pool):
            raise Problem(403, "Forbidden", f"this API key may not use pool {pool!r}")
        return key

    def routes(self) -> list[Route]:
        return [
            Route("/v1/pools/{pool}/claims", self.claim, methods=["POST"]),
            Route("/v1/pools/{pool}/claims/{key:path}", self.claim_by_key, methods=["GET"]),
            Route("/v1/pools", self.pools, methods=["GET"]),
            Route("/v1/pools/{pool}", self.pool, methods=["GET"]),
            Route("/healthz", self.healthz, methods=["GET"]),
            Route("/readyz", self.readyz, methods=["GET"]),
            Route("/metrics", self.metrics_text, methods=["GET"]),
            Route("/openapi.json", self.openapi, methods=["GET"]),
        ]


def claim_response(claim: Claim, status: int) -> Response:
    return Response(encode(claim.to_dict()), status, media_type="application/json")


def encode(document: Any) -> bytes:
    """JSON as Starlette's JSONResponse writes it, encoded once, wherever it is called."""
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def idempotency_key(request: Request) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    if not key.strip() or len(key) > MAX_KEY_LENGTH:
        raise invalid(
            f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} characters", "Idempotency-Key"
        )
    return key


async def read_json(request: Request, settings: ServiceSettings) -> Any:
    """The body parsed as JSON: 415 unless it is JSON, 413 over the limit, 422 too deep."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise Problem(
            415, "UnsupportedMediaType", "send the body as Content-Type: application/json"
        )
    body = await read_body(request, settings.max_body_bytes)
    try:
        value = json.loads(body)
    except RecursionError:
        raise too_deep(settings.max_json_depth) from None
    except (ValueError, UnicodeDecodeError):
        raise Problem(415, "UnsupportedMediaType", "the body is not valid JSON") from None
    if json_depth(value, settings.max_json_depth) > settings.max_json_depth:
        raise too_deep(settings.max_json_depth)
    return value


async def read_body(request: Request, limit: int) -> bytes:
    too_large = Problem(413, "PayloadTooLarge", f"the body is larger than {limit} bytes")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def too_deep(limit: int) -> Problem:
    return invalid(f"the body is nested deeper than {limit} levels", None)


def json_depth(value: Any, limit: int) -> int:
    """How deeply ``value`` nests containers (a scalar is 0), counted no further than
    ``limit + 1``: level by level, so a hostile body cannot exhaust the stack."""
    depth, level = 0, [value]
    while depth <= limit:
        containers = [item for item in level if isinstance(item, dict | list)]
        if not containers:
            break
        depth += 1
        level = [
            child
            for container in containers
            for child in (container.values() if isinstance(container, dict) else container)
        ]
    return depth


def invalid(message: str, field: str | None) -> Problem:
    """422 for a body the parser refuses, naming the field (and the limit, in the message)."""
    return Problem(422, "InvalidClaim", message, field=field)


def parse_claim_body(body: Any, key: str | None) -> tuple[str, dict[str, Any] | None]:
    if not isinstance(body, dict):
        raise invalid(f"the body must be a JSON object, not {json_type(body)}", None)
    unknown = sorted(set(body) - set(CLAIM_FIELDS))
    if unknown:
        raise invalid(
            f"unknown field {unknown[0]!r}; the fields are: {', '.join(CLAIM_FIELDS)}", unknown[0]
        )
    recipient, data = body.get("recipient"), body.get("data")
    if not isinstance(recipient, str):
        raise invalid("recipient is required and must be a string", "recipient")
    if data is not None and not isinstance(data, dict):
        raise invalid(f"data must be a JSON object, not {json_type(data)}", "data")
    return recipient, data


def json_type(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    return names.get(type(value), "a number")


def field_of(exc: InvalidClaim) -> str | None:
    """The field a library InvalidClaim is about: its message starts with the field's name."""
    first = exc.message.split(" ", 1)[0]
    return {"recipient": "recipient", "data": "data", "key": "Idempotency-Key"}.get(first)


async def on_linkpool_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, LinkPoolError)
    status = next((code for cls, code in STATUS_OF.items() if isinstance(exc, cls)), 500)
    extra = error_context(exc)
    headers = {}
    if isinstance(exc, InvalidClaim):
        extra["field"] = field_of(exc)
    if isinstance(exc, PoolExhausted):
        headers["Retry-After"] = str(round(request.app.state.service.settings.retry_after))
    if isinstance(exc, DatabaseError):
        headers["Retry-After"] = "1"
    if status == 500:
        LOG.error("unexpected %s: %s", type(exc).__name__, exc)
    return JSONResponse(error_body(type(exc).__name__, exc.message, **extra), status, headers)


async def on_problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Problem)
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return JSONResponse(error_body(exc.kind, exc.message, **exc.extra), exc.status, headers)


async def on_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    kind = {404: "NotFound", 405: "MethodNotAllowed"}.get(exc.status_code, "HTTPError")
    return JSONResponse(error_body(kind, str(exc.detail)), exc.status_code, exc.headers)


async def on_unexpected(request: Request, exc: Exception) -> Response:
    LOG.error("unexpected error answering %s", request.url.path, exc_info=exc)
    return JSONResponse(error_body("InternalError", "the service failed; see its log"), 500)


class AccessLog:
    """One log line per request: method, route, status, time, and the key's NAME, the pool and
    the link id. Never the key, never a link URL, never a body."""

    def __init__(self, app: ASGIApp, metrics: Callable[[], ServiceMetrics]) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            self.note(scope, status, time.perf_counter() - started)

    def note(self, scope: Scope, status: int, seconds: float) -> None:
        state = scope.get("state", {})
        route = getattr(scope.get("route"), "path", "unmatched")
        self.metrics().requests.labels(route, str(status)).inc()
        ACCESS_LOG.info(
            "%s %s %d %.1fms key=%s pool=%s link=%s",
            scope["method"],
            route,
            status,
            seconds * 1000,
            state.get("key_name", "-"),
            state.get("pool", "-"),
            state.get("link_id", "-"),
        )


def create_app(lp: LinkPool, settings: ServiceSettings | None = None) -> Starlette:
    service = Service(lp, settings or ServiceSettings())
    handlers: Mapping[Any, Callable[[Request, Exception], Awaitable[Response]]] = {
        LinkPoolError: on_linkpool_error,
        Problem: on_problem,
        HTTPException: on_http_exception,
        Exception: on_unexpected,
    }

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await service.start()
        yield
        await service.stop()

    app = Starlette(routes=service.routes(), exception_handlers=dict(handlers), lifespan=lifespan)
    app.state.service = service
    app.add_middleware(AccessLog, metrics=lambda: service.metrics)
    return app


def app_from_environment() -> Starlette:
    """The app a uvicorn worker builds for itself (``linkpool serve``): its own engine, from
    the configuration named by $LINKPOOL_CONFIG.

    What the worker imported lives as long as it does: ``gc.freeze`` takes it out of the
    garbage collector's passes over the oldest generation, which otherwise walk every module
    and object of the libraries; at 8 connections they made most of the p99 (24 ms to 13 ms
    on PostgreSQL, docs/benchmarks.md). The freeze comes before the engine: a pool that a
    reconnect replaces is a cycle with its connection records, which only the collector frees
    (frozen, its connections would stay open for good)."""
    settings = load_settings()
    gc.collect()
    gc.freeze()
    return create_app(
        LinkPool.from_settings(settings, engine=service_engine(settings)), settings.service
    )


def service_engine(settings: Settings) -> Engine:
    """On PostgreSQL, a pool of exactly ``connections``: one per thread of the service, so
    none is opened and closed per request (SQLAlchemy's default, 5 and 10 overflow, would
    churn the rest). On SQLite the service uses one thread (``service_threads``)."""
    url = settings.database_url
    if make_url(url).get_backend_name() == "sqlite":
        return create_engine(url)
    return create_engine(url, pool_size=settings.service.connections, max_overflow=0)


def loop_claims(lp: LinkPool, settings: ServiceSettings) -> AsyncClaims | None:
    """The event loop's own claim connections, on PostgreSQL (see ``linkpool.store.async_claim``);
    SQLite claims on the worker's one thread."""
    if lp.engine.dialect.name != "postgresql":
        return None
    from linkpool.store.async_claim import AsyncClaims  # psycopg is an optional dependency

    return AsyncClaims(lp.store.compiled_claim, lp.engine.url, settings.connections)


def service_threads(engine: Engine, settings: ServiceSettings) -> int:
    """The threads that run a worker's blocking calls: ``connections`` on PostgreSQL, one on
    SQLite, where writers take turns anyway and more threads only wait in SQLite's busy
    handler, whose backoff sleeps made a p99 of 240-450 ms at 8 connections (28 ms with one
    thread, at the same claims per second: docs/benchmarks.md)."""
    return 1 if engine.dialect.name == "sqlite" else settings.connections
