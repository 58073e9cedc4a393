"""QualtricsClient over real sockets on loopback: each request bounded in total (a server trickling
its head or its body), TLS verified, proxies from the environment, the simulator served over HTTP.

The real clock here: a trickle is real network time, so each test waits a second or two.
"""

from __future__ import annotations

import io
import itertools
import random
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import httpx
import pytest

from linkpool.errors import OutcomeUnknown, QualtricsTimeout, QualtricsUnreachable
from linkpool.qualtrics import QualtricsClient
from linkpool.qualtrics import transport as bounded
from linkpool.simulator import Simulator, running

TOKEN = "tok-Sup3rS3cret-9f8e7d"
DIRECTORY = "POOL_TestDirectory01"
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")

Answer = Callable[[socket.socket, threading.Event], None]


class LoopbackServer(threading.Thread):
    """A server on 127.0.0.1 that reads each request's first bytes, keeps them in ``requests``,
    and answers with ``answer`` (over TLS with ``tls``) until the ``with`` block ends."""

    def __init__(self, answer: Answer, tls: ssl.SSLContext | None = None) -> None:
        super().__init__(daemon=True)
        self.answer = answer
        self.tls = tls
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.port = self.listener.getsockname()[1]
        self.done = threading.Event()
        self.requests: list[bytes] = []

    def __enter__(self) -> LoopbackServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.done.set()
        self.join()
        self.listener.close()

    def run(self) -> None:
        while not self.done.is_set():
            try:
                connection, _ = self.listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self.serve, args=(connection,), daemon=True).start()

    def serve(self, connection: socket.socket) -> None:
        with connection:
            try:
                if self.tls is not None:
                    connection = self.tls.wrap_socket(connection, server_side=True)
                self.requests.append(connection.recv(65536))
                self.answer(connection, self.done)
            except OSError:  # the client hung up, or refused our certificate
                return


def trickle(data: Iterable[int], every: float) -> Answer:
    """An answer sending ``data`` one byte at a time, ``every`` seconds apart."""

    def answer(connection: socket.socket, done: threading.Event) -> None:
        for byte in data:
            if done.wait(every):
                return
            connection.sendall(bytes([byte]))

    return answer


def trickled_head() -> Answer:
    """The status line, then headers without end, a byte every 0.2 s."""
    head = itertools.chain(b"HTTP/1.1 200 OK\r\n", itertools.cycle(b"X-Trickle: 1\r\n"))
    return trickle(head, 0.2)


def trickled_body(length: int = 100_000, every: float = 0.05) -> Answer:
    """The head at once, then ``length`` bytes of body a byte at a time."""
    send_body = trickle(itertools.repeat(ord(" "), length), every)

    def answer(connection: socket.socket, done: threading.Event) -> None:
        connection.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Length: " + str(length).encode() + b"\r\n\r\n"
        )
        send_body(connection, done)

    return answer


@pytest.fixture(autouse=True)
def no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loopback is reached directly, whatever proxies the machine running the tests sets."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


def client_of(base_url: str, **options: object) -> QualtricsClient:
    settings: dict = {"timeout": 1.0, "max_retries": 0, "rng": random.Random(7), **options}
    return QualtricsClient(base_url=base_url, token=TOKEN, directory_id=DIRECTORY, **settings)


def timed(call: Callable[[], object]) -> tuple[BaseException, float]:
    """The error ``call`` raised and how long it took to, in seconds of real time."""
    started = time.monotonic()
    with pytest.raises(Exception) as raised:
        call()
    return raised.value, time.monotonic() - started


def test_a_request_whose_answer_trickles_is_bounded_in_total_time() -> None:
    with LoopbackServer(trickled_body()) as server:
        with client_of(f"http://127.0.0.1:{server.port}/API/v3") as client:
            error, elapsed = timed(client.whoami)

    assert isinstance(error, QualtricsTimeout)
    assert "no complete answer within 1s in total" in str(error)
    assert 0.9 < elapsed < 3


def test_a_request_whose_status_line_and_headers_trickle_is_bounded_in_total_time() -> None:
    with LoopbackServer(trickled_head()) as server:
        with client_of(f"http://127.0.0.1:{server.port}/API/v3") as client:
            error, elapsed = timed(client.whoami)

    assert isinstance(error, QualtricsTimeout)
    assert str(error).count("\n") == 0
    assert "(no complete answer within 1s in total, 1 attempt(s))" in str(error)
    assert 0.9 < elapsed < 3
    assert len(server.requests) == 1


def test_a_get_whose_headers_trickle_is_retried_each_attempt_bounded() -> None:
    with LoopbackServer(trickled_head()) as server:
        base_url = f"http://127.0.0.1:{server.port}/API/v3"
        with client_of(base_url, timeout=0.5, max_retries=1) as client:
            error, elapsed = timed(client.whoami)

    assert isinstance(error, QualtricsTimeout)
    assert "(no complete answer within 0.5s in total, 2 attempt(s))" in str(error)
    assert elapsed < 3
    assert len(server.requests) == 2
    assert client.outcomes == {("GET /whoami", "TotalTimeout"): 2}


def test_a_post_whose_headers_trickle_is_outcome_unknown_and_not_sent_again() -> None:
    with LoopbackServer(trickled_head()) as server:
        with client_of(f"http://127.0.0.1:{server.port}/API/v3", max_retries=3) as client:
            error, elapsed = timed(lambda: client.create_mailing_list("linkpool/nps/x"))

    assert isinstance(error, OutcomeUnknown)
    assert "TotalTimeout" in str(error)
    assert elapsed < 3
    assert len(server.requests) == 1


def test_a_download_is_bounded_to_its_head_then_per_read() -> None:
    """An export's file takes as long as it takes, a read at a time: here longer than timeout."""
    with LoopbackServer(trickled_body(length=30, every=0.05)) as server:
        with client_of(f"http://127.0.0.1:{server.port}/API/v3", timeout=0.5) as client:
            sink = io.BytesIO()
            assert client.download_response_export("SV_1", "file-1", sink) == 30

    assert sink.getvalue() == b" " * 30


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
        + ["-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"]
        + ["-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    return cert, key


def tls_server(certificate: tuple[Path, Path], answer: Answer) -> LoopbackServer:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    return LoopbackServer(answer, tls=context)


def test_over_https_a_trickled_head_is_bounded_too(
    certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))  # trusted, as httpx reads it
    with tls_server(certificate, trickled_head()) as server:
        with client_of(f"https://127.0.0.1:{server.port}/API/v3") as client:
            error, elapsed = timed(client.whoami)

    assert isinstance(error, QualtricsTimeout)
    assert "in total" in str(error)
    assert elapsed < 3
    assert len(server.requests) == 1


def test_over_https_an_untrusted_certificate_is_refused(
    certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    with tls_server(certificate, trickled_head()) as server:
        with client_of(f"https://127.0.0.1:{server.port}/API/v3") as client:
            error, _ = timed(client.whoami)

    assert isinstance(error, QualtricsUnreachable)
    assert isinstance(error.__cause__, httpx.ConnectError)
    assert "CERTIFICATE_VERIFY_FAILED" in str(error.__cause__)
    assert server.requests == []


def test_a_proxy_named_by_the_environment_carries_requests_bounded_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with LoopbackServer(trickled_head()) as proxy:
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
        with client_of("http://iad1.qualtrics.invalid/API/v3") as client:
            error, elapsed = timed(client.whoami)

    assert isinstance(error, QualtricsTimeout)
    assert "in total" in str(error)
    assert elapsed < 3
    assert proxy.requests[0].startswith(b"GET http://iad1.qualtrics.invalid/API/v3/whoami ")


@pytest.mark.parametrize(
    "environment",
    [
        {},
        {"HTTPS_PROXY": "proxy.example:3128"},
        {"HTTP_PROXY": "http://p:1", "ALL_PROXY": "http://s:2", "NO_PROXY": "localhost"},
        {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "*"},
        {"HTTPS_PROXY": "http://p:1", "NO_PROXY": ".qualtrics.com, 10.0.0.1,::1,http://x.test"},
    ],
)
def test_proxies_are_read_from_the_environment_as_httpx_reads_them(
    environment: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """httpx reads them only for a transport of its own: ``environment_mounts`` does the same."""
    from httpx._utils import get_environment_proxies  # httpx's reading, to compare with

    for name, value in environment.items():
        monkeypatch.setenv(name, value)

    mounts = bounded.environment_mounts(1.0)

    expected = get_environment_proxies()
    assert mounts.keys() == expected.keys()
    assert all((mounts[key] is None) == (expected[key] is None) for key in expected)


@pytest.fixture
def served() -> Iterator[tuple[Simulator, str]]:
    simulator = Simulator()
    with running(simulator) as base_url:
        yield simulator, base_url


def test_calls_to_a_served_simulator_go_through_the_bounded_transport(
    served: tuple[Simulator, str],
) -> None:
    """Keep-alive, paging, and a POST body of many write pieces, over the real transport."""
    simulator, base_url = served
    contacts = [{"extRef": f"r-{n:05d}", "embeddedData": {"slot": "x" * 40}} for n in range(2000)]
    with QualtricsClient(
        base_url=base_url, token=simulator.token, directory_id=simulator.directory_id
    ) as client:
        client.check_access()
        list_id = client.create_mailing_list("linkpool/nps/served")
        job = client.start_import(list_id, contacts)
        client.wait_for_import(list_id, job.id, poll_interval=0.01, timeout=10)
        assert client.count_contacts(list_id) == 2000
        assert [m["mailingListId"] for m in client.iter_mailing_lists()] == [list_id]


class LeaseGone(Exception):
    pass


def test_a_guard_that_fails_between_the_slot_and_the_first_byte_stops_the_request_unsent() -> None:
    """A holder frozen after its first check (in ``_send``) finds its lease gone when it
    resumes: the transport checks again just before the request's first byte, after the
    connect, and nothing reaches the server."""
    checks: list[str] = []

    def lease_check() -> None:
        checks.append("checked")
        if len(checks) > 1:  # the lease lapsed while the process was frozen
            raise LeaseGone

    with LoopbackServer(trickled_head()) as server:
        with client_of(f"http://127.0.0.1:{server.port}/API/v3") as client:
            with client.guarded(lease_check), pytest.raises(LeaseGone):
                client.whoami()
        time.sleep(0.3)  # a request that had gone out would have been read by now

    assert checks == ["checked", "checked"]
    assert [first_bytes for first_bytes in server.requests if first_bytes] == []  # connected only


def test_a_guard_that_holds_is_checked_twice_and_the_request_goes_out(
    served: tuple[Simulator, str],
) -> None:
    simulator, base_url = served
    checks: list[str] = []
    with QualtricsClient(
        base_url=base_url, token=simulator.token, directory_id=simulator.directory_id
    ) as client:
        with client.guarded(lambda: checks.append("checked")):
            client.check_access()

    assert len(checks) == 2 * 2  # check_access: two reads, each checked twice


def test_the_last_check_waits_for_a_proxy_tunnel_to_be_set_up() -> None:
    """Behind an HTTPS proxy, httpcore sends ``CONNECT`` with the request's extensions: the
    check runs for the request's own headers, not for the tunnel's."""
    import httpcore

    checks: list[str] = []
    extensions = bounded._core_extensions(
        {bounded.BEFORE_SEND: lambda: checks.append("checked")}, bounded._Deadline.after(5)
    )
    trace = extensions["trace"]
    tunnel = httpcore.Request(b"CONNECT", "https://iad1.qualtrics.com:443")
    request = httpcore.Request(b"GET", "https://iad1.qualtrics.com/API/v3/whoami")

    trace("http11.send_request_headers.started", {"request": tunnel})
    assert checks == []
    trace("connection.start_tls.started", {"request": request})
    assert checks == []
    trace("http11.send_request_headers.started", {"request": request})
    assert checks == ["checked"]


@pytest.mark.parametrize(
    "variable, value",
    [("ALL_PROXY", "ftp://user:S3cretPass@proxy.example:21"), ("HTTPS_PROXY", "gopher://x:1")],
)
def test_a_proxy_httpx_cannot_use_is_one_config_error_without_its_url(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    from linkpool.errors import ConfigError

    monkeypatch.setenv(variable, value)

    with pytest.raises(ConfigError) as raised:
        client_of("https://iad1.qualtrics.com/API/v3")

    assert "HTTP_PROXY, HTTPS_PROXY or ALL_PROXY" in str(raised.value)
    assert "S3cretPass" not in str(raised.value) and "proxy.example" not in str(raised.value)
