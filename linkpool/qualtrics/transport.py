"""The client's transport: httpx's own, except that each request's whole time is bounded.

httpx bounds each network operation (the connect, each read, each write) by its timeout, never a
request as a whole (encode/httpx#1450): a server that sends its status line, its headers or its
body a byte at a time, each read well within the read timeout, holds the request as long as it
likes. Here a request gets a deadline as it enters the transport, ``total_timeout`` seconds of
real (monotonic) time away, and the network streams under the connection pool clamp every
operation's timeout to the time left: the request ends at its deadline, whichever phase it is in
(waiting for a connection, connecting, the TLS handshake, sending, the headers, the body).

Public API only: ``httpcore.ConnectionPool`` and its proxies take a ``network_backend``, and this
module wraps httpcore's ``SyncBackend`` in one whose streams read the deadline of the request
being served from a context variable. That is sound because a synchronous request does all its
I/O on the calling thread, and over HTTP/1.1 a connection serves one request at a time.

What httpx does for the transport it builds itself is done here the same way: certificates are
verified (certifi, or ``SSL_CERT_FILE`` / ``SSL_CERT_DIR``) and ``HTTP_PROXY``, ``HTTPS_PROXY``,
``ALL_PROXY`` and ``NO_PROXY`` are honoured (``environment_mounts``), since httpx reads those only
when no transport is given. Name resolution is the one step no timeout reaches (the operating
system's resolver), as with httpx.
"""

from __future__ import annotations

import ipaddress
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar

import httpcore
import httpx

STREAM_BODY = "linkpool.stream_body"
"""A request extension: when true, the deadline bounds the request up to its headers only, and
the body is bounded per read (a download of unknown size, read by the caller as it comes)."""

BEFORE_SEND = "linkpool.before_send"
"""A request extension: a callable run just before the request's headers are written (after
any connect, and behind a proxy after its tunnel is set up), on the sending thread. What it
raises stops the request unsent: the client checks there that the lease it works under still
holds, so a holder frozen (SIGSTOP) after its earlier checks sends nothing when it resumes.
The window left is one ``write``."""

_WRITE_CHUNK = 64 * 1024
"""A write is sent in pieces of this size, each under the time then left: one large body (an
import) cannot outlast the deadline by more than one piece's worth."""

_LIMITS: dict[str, Any] = {
    "max_connections": 100,
    "max_keepalive_connections": 20,
    "keepalive_expiry": 5.0,
}
"""httpx's default pool limits."""

T = TypeVar("T")


class TotalTimeout(httpx.TimeoutException):
    """The request's whole time budget ran out, though every read and write kept within its own
    timeout: a server trickling its answer. It may have reached the server."""


@dataclass(frozen=True)
class _Deadline:
    at: float
    budget: float

    @classmethod
    def after(cls, budget: float) -> _Deadline:
        return cls(time.monotonic() + budget, budget)

    def left(self) -> float:
        return self.at - time.monotonic()


class _DeadlinePassed(Exception):
    """Raised by a stream under the pool; the transport turns it into ``TotalTimeout``."""

    def __init__(self, deadline: _Deadline) -> None:
        super().__init__(f"no complete answer within {deadline.budget:g}s in total")


_current: ContextVar[_Deadline | None] = ContextVar("linkpool_request_deadline", default=None)


@contextmanager
def _within(deadline: _Deadline | None) -> Iterator[None]:
    """Network operations inside the block, on this thread, end by ``deadline``."""
    token = _current.set(deadline)
    try:
        yield
    finally:
        _current.reset(token)


def _tracing_before_send(
    hook: Callable[[], object], inner: Callable[[str, dict[str, Any]], object] | None
) -> Callable[[str, dict[str, Any]], object]:
    """httpcore's ``trace`` extension, running ``hook`` as the request's headers are about to
    be written (after connecting, and after a proxy's ``CONNECT``, which carries the same
    extensions and is skipped)."""

    def trace(event: str, info: dict[str, Any]) -> object:
        request = info.get("request")
        if event == "http11.send_request_headers.started" and (
            request is None or request.method != b"CONNECT"
        ):
            hook()
        return inner(event, info) if inner is not None else None

    return trace


def _connect_timeout(timeout: float | None) -> float | None:
    """``timeout`` clamped to the current deadline, for a step before anything is sent: running
    out there is a ``ConnectTimeout``, so even a POST may be tried again."""
    deadline = _current.get()
    if deadline is None:
        return timeout
    left = deadline.left()
    if left <= 0:
        raise httpcore.ConnectTimeout(f"not connected within {deadline.budget:g}s in total")
    return left if timeout is None else min(timeout, left)


def _bounded(operation: Callable[[float | None], T], timeout: float | None) -> T:
    """``operation(timeout)``, with ``timeout`` clamped to the current deadline; a timeout that
    the deadline caused is ``_DeadlinePassed``."""
    deadline = _current.get()
    if deadline is None:
        return operation(timeout)
    left = deadline.left()
    if left <= 0:
        raise _DeadlinePassed(deadline)
    if timeout is not None and timeout <= left:
        return operation(timeout)
    try:
        return operation(left)
    except httpcore.TimeoutException as exc:
        raise _DeadlinePassed(deadline) from exc


class _DeadlineStream(httpcore.NetworkStream):
    """A network stream whose reads and writes end by the current request's deadline."""

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return _bounded(lambda seconds: self._inner.read(max_bytes, seconds), timeout)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        for start in range(0, len(buffer), _WRITE_CHUNK):
            self._write_piece(buffer[start : start + _WRITE_CHUNK], timeout)

    def _write_piece(self, piece: bytes, timeout: float | None) -> None:
        _bounded(lambda seconds: self._inner.write(piece, seconds), timeout)

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: Any,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        tls = self._inner.start_tls(ssl_context, server_hostname, _connect_timeout(timeout))
        return _DeadlineStream(tls)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's synchronous backend, its connections bounded by the current deadline."""

    def __init__(self) -> None:
        self._inner = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.NetworkStream:
        stream = self._inner.connect_tcp(
            host, port, _connect_timeout(timeout), local_address, socket_options
        )
        return _DeadlineStream(stream)


_ERRORS: tuple[tuple[type[Exception], type[httpx.TransportError]], ...] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.ProxyError, httpx.ProxyError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.ProtocolError, httpx.ProtocolError),
)
"""httpcore's errors and the httpx errors they are raised as, the most specific first (as
httpx's own transport maps them)."""


@contextmanager
def _httpx_errors() -> Iterator[None]:
    try:
        yield
    except _DeadlinePassed as exc:
        raise TotalTimeout(str(exc)) from exc
    except Exception as exc:
        for core, mapped in _ERRORS:
            if isinstance(exc, core):
                raise mapped(str(exc)) from exc
        raise


class _ResponseStream(httpx.SyncByteStream):
    """The body as httpcore reads it, each read within ``deadline`` (None: per read only)."""

    def __init__(self, parts: Any, deadline: _Deadline | None) -> None:
        self._parts = parts
        self._deadline = deadline

    def __iter__(self) -> Iterator[bytes]:
        parts = iter(self._parts)
        while True:
            with _within(self._deadline), _httpx_errors():
                part = next(parts, None)
            if part is None:
                return
            yield part

    def close(self) -> None:
        close = getattr(self._parts, "close", None)
        if close is not None:
            with _httpx_errors():
                close()


class BoundedTransport(httpx.BaseTransport):
    """httpx's default transport (HTTP/1.1, certificates verified, an optional proxy) with each
    request bounded by ``total_timeout`` seconds in total, body included unless the request
    carries the ``STREAM_BODY`` extension."""

    def __init__(self, total_timeout: float, *, proxy: httpx.Proxy | None = None) -> None:
        self._total_timeout = total_timeout
        self._pool = _pool(httpx.create_ssl_context(), proxy)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        deadline = _Deadline.after(self._total_timeout)
        with _within(deadline), _httpx_errors():
            response = self._pool.handle_request(_core_request(request, deadline))
        body_deadline = None if request.extensions.get(STREAM_BODY) else deadline
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_ResponseStream(response.stream, body_deadline),
            extensions=response.extensions,
        )

    def close(self) -> None:
        self._pool.close()


def _core_request(request: httpx.Request, deadline: _Deadline) -> httpcore.Request:
    """``request`` as httpcore takes it, the way httpx's own transport builds it."""
    return httpcore.Request(
        method=request.method,
        url=httpcore.URL(
            scheme=request.url.raw_scheme,
            host=request.url.raw_host,
            port=request.url.port,
            target=request.url.raw_path,
        ),
        headers=request.headers.raw,
        content=request.stream,
        extensions=_core_extensions(request.extensions, deadline),
    )


def _core_extensions(extensions: dict[str, Any], deadline: _Deadline) -> dict[str, Any]:
    """The request's extensions for httpcore: the wait for a pooled connection (httpcore's
    own ``pool`` timeout, which no stream sees) clamped to the deadline, and ``BEFORE_SEND``
    run through httpcore's ``trace``."""
    timeouts = dict(extensions.get("timeout") or {})
    pool_wait = timeouts.get("pool")
    timeouts["pool"] = deadline.budget if pool_wait is None else min(pool_wait, deadline.budget)
    core = {**extensions, "timeout": timeouts}
    hook = extensions.get(BEFORE_SEND)
    if hook is not None:
        core["trace"] = _tracing_before_send(hook, extensions.get("trace"))
    return core


def _pool(ssl_context: Any, proxy: httpx.Proxy | None) -> httpcore.ConnectionPool:
    """A connection pool (direct, or through ``proxy``) over the deadline backend."""
    options: dict[str, Any] = {
        "ssl_context": ssl_context,
        "network_backend": _DeadlineBackend(),
        **_LIMITS,
    }
    if proxy is None:
        return httpcore.ConnectionPool(**options)
    url = httpcore.URL(
        scheme=proxy.url.raw_scheme,
        host=proxy.url.raw_host,
        port=proxy.url.port,
        target=proxy.url.raw_path,
    )
    if proxy.url.scheme in ("http", "https"):
        return httpcore.HTTPProxy(
            proxy_url=url,
            proxy_auth=proxy.raw_auth,
            proxy_headers=proxy.headers.raw,
            proxy_ssl_context=proxy.ssl_context,
            **options,
        )
    if proxy.url.scheme in ("socks5", "socks5h"):
        return httpcore.SOCKSProxy(proxy_url=url, proxy_auth=proxy.raw_auth, **options)
    raise ValueError(f"unsupported proxy scheme {proxy.url.scheme!r}: use http, https or socks5")


def environment_mounts(total_timeout: float) -> dict[str, httpx.BaseTransport | None]:
    """``httpx.Client(mounts=...)`` for the proxies the environment names, read as httpx reads
    them for its own transport: ``HTTP_PROXY``, ``HTTPS_PROXY``, ``ALL_PROXY``, and ``NO_PROXY``
    (None: no proxy for those hosts)."""
    mounts: dict[str, httpx.BaseTransport | None] = {}
    for pattern, url in _environment_proxies().items():
        proxy = None if url is None else httpx.Proxy(url)
        mounts[pattern] = None if proxy is None else BoundedTransport(total_timeout, proxy=proxy)
    return mounts


def _environment_proxies() -> dict[str, str | None]:
    found = urllib.request.getproxies()
    patterns: dict[str, str | None] = {}
    for scheme in ("http", "https", "all"):
        if found.get(scheme):
            url = found[scheme]
            patterns[f"{scheme}://"] = url if "://" in url else f"http://{url}"
    for host in (name.strip() for name in found.get("no", "").split(",")):
        if host == "*":
            return {}
        if host:
            patterns[_no_proxy_pattern(host)] = None
    return patterns


def _no_proxy_pattern(host: str) -> str:
    """The mount pattern of one ``NO_PROXY`` entry, as httpx (and curl) read it: a domain
    covers its subdomains."""
    if "://" in host:
        return host
    try:
        address = ipaddress.ip_address(host.split("/")[0])
    except ValueError:
        return f"all://{host}" if host.lower() == "localhost" else f"all://*{host}"
    return f"all://[{host}]" if address.version == 6 else f"all://{host}"
