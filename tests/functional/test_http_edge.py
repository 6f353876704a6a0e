"""The HTTP edge of a real `aisystant-server serve`, over raw sockets: framing, timeouts,
the per-address connection cap, and the envelope of what the HTTP layer answers itself.

Timeouts are set to one second so that slow clients are cut within seconds; nothing here
measures a duration: a test waits for the server's answer or its close, and a socket
timeout far above the server's only turns a hang into a failure.
"""

import contextlib
import itertools
import json
import os
import shutil
import socket
import time

import pytest
import redis
import requests

from tests.functional.conftest import FAST_FAILURES, TEST_JWT_SECRET, _admin_execute, postgres_url
from tests.functional.live import Api, marker, script
from tests.processes import ROOT, Process, free_port, server_command, wait_for_line

pytestmark = pytest.mark.slow

_names = itertools.count()
GIVE_UP = 20  # seconds: a server that has not answered or closed by then never will


class Server:
    def __init__(self, port, process, database_url):
        self.port, self.process, self.database_url = port, process, database_url
        self.url = f"http://127.0.0.1:{port}"

    def connect(self):
        sock = socket.create_connection(("127.0.0.1", self.port))
        sock.settimeout(GIVE_UP)
        return sock


@contextlib.contextmanager
def running_server(backend, template_database, redis_url, tmp_path, worker=False, **env):
    """A real `aisystant-server serve` (and in the distributed mode, a worker if asked)
    on a fresh database, with these environment variables."""
    name = f"aisystant_edge_{os.getpid()}_{next(_names)}"
    if backend == "postgresql":
        _admin_execute(f"CREATE DATABASE {name} TEMPLATE {template_database}")
        database_url = postgres_url(name)
        redis.Redis.from_url(redis_url).flushdb()
    else:
        shutil.copy(template_database, tmp_path / f"{name}.sqlite3")
        database_url = f"sqlite:///{tmp_path / name}.sqlite3"
    port = free_port()
    env = {"DATABASE_URL": database_url, "PORT": str(port), "JWT_SECRET": TEST_JWT_SECRET,
           "AISYSTANT_INI": os.path.join(ROOT, "development.ini"), "RATE_LIMIT_MAX_REQUESTS": "1000000",
           **({"REDIS_URL": redis_url} if backend == "postgresql" else {}), **env}
    processes = [Process(server_command("serve"), env, tmp_path / f"{name}-server.log")]
    try:
        processes[0].wait_for_http(f"http://127.0.0.1:{port}/api/health")
        if worker and backend == "postgresql":
            processes.append(Process(server_command("worker"), env, tmp_path / f"{name}-worker.log"))
            wait_for_line(processes[-1], r"Listening on|listening on|started")
        yield Server(port, processes[0], database_url)
    finally:
        for process in processes:
            process.stop()
        if backend == "postgresql":
            _admin_execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            redis.Redis.from_url(redis_url).flushdb()


@pytest.fixture(scope="module")
def edge(backend, template_database, redis_databases, simulator, tmp_path_factory):
    """A server with one-second header, body and keep-alive timeouts and a 64 KiB body cap."""
    with running_server(backend, template_database, redis_databases[1], tmp_path_factory.mktemp("edge"),
                        worker=True, HTTP_HEADER_TIMEOUT_SECONDS="1", HTTP_BODY_TIMEOUT_SECONDS="1",
                        HTTP_KEEPALIVE_TIMEOUT_SECONDS="1", MAX_BODY_BYTES="65536",
                        ANTHROPIC_BASE_URL=simulator, ANTHROPIC_API_KEY="test-key", **FAST_FAILURES) as server:
        yield server


def exchange(server, data, read_all=True):
    """Send raw bytes; everything the server sends back until it closes (or GIVE_UP)."""
    with server.connect() as sock:
        sock.sendall(data)
        return read_until_closed(sock) if read_all else sock.recv(65536)


def read_until_closed(sock):
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def responses(raw):
    """The (status, headers, body) of each HTTP response in `raw`, in order."""
    found = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", 0))
        found.append((int(lines[0].split()[1]), headers, rest[:length]))
        raw = rest[length:]
    return found


def assert_envelope(response, status, code):
    got_status, headers, body = response
    assert got_status == status, response
    assert headers["content-type"].startswith("application/json")
    data = json.loads(body)
    assert data["success"] is False and data["code"] == code and data["message"]
    return headers


def request(method, path, *headers, body=b""):
    lines = [f"{method} {path} HTTP/1.1", "Host: edge.test", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


SMUGGLED = request("GET", "/api/health", "Connection: close")


@pytest.mark.parametrize("path", ["/%ff", "/api/%ff", "/api/chat/conversations/%c0%ae/"])
def test_a_path_that_is_not_utf8_is_a_json_400_not_a_500(edge, path):
    [response] = responses(exchange(edge, request("GET", path, "Connection: close")))
    assert_envelope(response, 400, "bad_request")
    assert "Traceback" not in edge.process.output()


@pytest.mark.parametrize("framing", [
    ["Transfer-Encoding: gzip, chunked"],
    ["Transfer-Encoding: identity"],
    ["Transfer-Encoding: xchunked"],
    ["Transfer-Encoding: chunked, identity"],
    ["Transfer-Encoding: chunked", "Transfer-Encoding: chunked"],
    ["Transfer-Encoding: chunked", "Content-Length: 5"],
    ["Transfer-Encoding : chunked"],
    ["X-Pad: a", " Transfer-Encoding: chunked"],
    ["Content-Length: 5", "Content-Length: 40"],
    ["Content-Length: 5, 40"],
    ["Content-Length: +5"],
    ["Content-Length: 0x5"],
    ["Content-Length: 5_0"],
], ids=lambda framing: " | ".join(framing))
def test_ambiguous_framing_is_refused_with_400_and_close_and_nothing_is_smuggled(edge, framing):
    body = b"5\r\nhello\r\n0\r\n\r\n"
    raw = exchange(edge, request("POST", "/api/auth/login", "Content-Type: application/json", *framing,
                                 body=body) + SMUGGLED)
    [response] = responses(raw)  # one answer: the request after it is never read
    assert assert_envelope(response, 400, "bad_request")["connection"] == "close"


@pytest.mark.parametrize("raw", [
    b"GET /api/health HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"GET /api/health HTTP/1.1\r\nHost: edge.test\nX-Other: a\r\n\r\n",
    b"GET /api/health HTTP/1.1\r\nHost: edge.test\r\nX-Other: a\rb\r\n\r\n",
    b"GET /api/health HTTP/1.1\r\nX-No-Host: a\r\n\r\n",
    b"GET /api/health HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    b"GET /api/health\r\n\r\n",
], ids=["chunked-on-http-1.0", "bare-lf", "bare-cr", "no-host", "two-hosts", "http-0.9"])
def test_requests_a_proxy_could_read_otherwise_are_refused(edge, raw):
    [response] = responses(exchange(edge, raw + SMUGGLED))
    assert_envelope(response, 400, "bad_request")


def test_a_well_framed_chunked_request_and_the_next_one_are_both_answered(edge):
    body = b'{"email": "nobody@example.com", "password": "long enough"}'
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    raw = exchange(edge, request("POST", "/api/auth/login", "Content-Type: application/json",
                                 "Transfer-Encoding: chunked", body=chunked) + SMUGGLED)
    first, second = responses(raw)
    assert_envelope(first, 401, "invalid_credentials")
    assert second[0] == 200


@pytest.mark.parametrize("raw, status, code", [
    (request("POST", "/api/auth/login", "Content-Length: abc"), 400, "bad_request"),
    (request("POST", "/api/auth/login", "Transfer-Encoding: chunked", body=b"zz\r\nabc\r\n0\r\n\r\n"),
     400, "bad_request"),
    (request("GET", "/", "X-Big: " + "a" * 70_000), 431, "headers_too_large"),
    (request("GET", "/", *(f"X-Header-{n}: a" for n in range(150))), 431, "headers_too_large"),
    (request("GET", "/" + "a" * 9000), 414, "uri_too_long"),
    (b"NOT-HTTP\r\n\r\n", 400, "bad_request"),
], ids=["bad-content-length", "bad-chunk-size", "huge-header", "many-headers", "long-uri", "garbage"])
def test_what_the_http_layer_refuses_is_the_envelope_then_close(edge, raw, status, code):
    [response] = responses(exchange(edge, raw))
    assert assert_envelope(response, status, code)["connection"] == "close"


def test_the_http_layer_speaks_the_client_language_and_cors(edge):
    raw = request("POST", "/api/auth/login", "Content-Length: abc", "Accept-Language: en",
                  "Origin: http://localhost:3000")
    [response] = responses(exchange(edge, raw))
    headers = assert_envelope(response, 400, "bad_request")
    assert json.loads(response[2])["message"] == "Malformed HTTP request."
    assert headers["access-control-allow-origin"] == "http://localhost:3000"
    assert headers["x-content-type-options"] == "nosniff"


def test_a_body_over_the_cap_is_a_413_before_it_is_sent(edge):
    with edge.connect() as sock:
        sock.sendall(request("POST", "/api/auth/register", "Content-Type: application/json",
                             "Content-Length: 50000000", "Expect: 100-continue"))
        [response] = responses(read_until_closed(sock))
    assert_envelope(response, 413, "payload_too_large")


def test_a_chunked_body_over_the_cap_is_a_413(edge):
    chunk = b"%x\r\n%s\r\n" % (32768, b"a" * 32768)
    raw = exchange(edge, request("POST", "/api/auth/register", "Content-Type: application/json",
                                 "Transfer-Encoding: chunked", body=chunk * 3 + b"0\r\n\r\n"))
    [response] = responses(raw)
    assert_envelope(response, 413, "payload_too_large")


def test_headers_sent_slowly_get_408_then_close(edge):
    with edge.connect() as sock:
        sock.sendall(b"GET /api/health HTTP/1.1\r\nHost: edge.test\r\n")
        received = drip(sock, b"X-Slow: " + b"a" * 100)
    [response] = responses(received)
    assert_envelope(response, 408, "request_timeout")


def test_a_body_sent_slowly_gets_408_then_close(edge):
    with edge.connect() as sock:
        sock.sendall(request("POST", "/api/auth/login", "Content-Type: application/json", "Content-Length: 200"))
        received = drip(sock, b"{" + b" " * 199)
    [response] = responses(received)
    assert_envelope(response, 408, "request_timeout")


def drip(sock, data):
    """Send `data` a byte every 0.2 s (each byte well within any idle timer) until the
    server answers; what it sent until it closed."""
    sock.settimeout(0.2)
    for byte in data:
        try:
            sock.sendall(bytes([byte]))
            received = sock.recv(65536)
        except TimeoutError:
            continue
        except (BrokenPipeError, ConnectionResetError):
            raise AssertionError("the server closed without an answer") from None
        sock.settimeout(GIVE_UP)
        return received + read_until_closed(sock)
    raise AssertionError("the server kept waiting for a request sent a byte at a time")


def test_a_connection_that_sends_nothing_is_closed_without_an_answer(edge):
    with edge.connect() as sock:
        assert sock.recv(65536) == b""


def test_an_idle_keep_alive_connection_is_closed_after_its_request(edge):
    with edge.connect() as sock:
        sock.sendall(request("GET", "/api/health"))
        [response] = responses(read_until_closed(sock))
    assert response[0] == 200


def test_an_sse_stream_lasts_longer_than_the_timeouts(edge, simulator):
    api = Api(edge.url).register()
    tag = marker()
    script(simulator, tag, [{"ttft_ms": 300, "reply_tokens": 12, "tokens_per_second": 4}])  # ~3.3 s
    conversation = api.conversation()
    sent = api.send(conversation, f"{tag} slow please", wait=False)
    assert sent.status_code == 202, sent.text
    events = api.stream(conversation, sent.json()["data"]["assistantMessage"]["id"], timeout=GIVE_UP)
    assert events[-1][0] == "done"
    assert [event for event, _, _ in events].count("delta") >= 2


@pytest.fixture(scope="module")
def capped(backend, template_database, redis_databases, tmp_path_factory):
    with running_server(backend, template_database, redis_databases[1], tmp_path_factory.mktemp("capped"),
                        MAX_CONNECTIONS_PER_ADDRESS="3") as server:
        yield server


def test_connections_over_the_cap_from_one_address_get_503_until_one_closes(capped):
    held = [capped.connect() for _ in range(3)]
    try:
        wait_until_accepted(capped, held)
        with capped.connect() as sock:
            sock.sendall(request("GET", "/api/health"))
            [response] = responses(read_until_closed(sock))
        headers = assert_envelope(response, 503, "service_unavailable")
        assert headers["retry-after"] and headers["connection"] == "close"
        held.pop().close()
        deadline = time.monotonic() + GIVE_UP
        while requests.get(capped.url + "/api/health", timeout=GIVE_UP).status_code != 200:
            assert time.monotonic() < deadline, "the freed slot never came back"
            time.sleep(0.05)
    finally:
        for sock in held:
            sock.close()


def wait_until_accepted(server, held):
    """Each held connection has been served once (so the server counts it)."""
    for sock in held:
        sock.sendall(request("GET", "/api/health"))
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(65536)


@pytest.fixture(scope="module")
def proxied(backend, template_database, redis_databases, tmp_path_factory):
    with running_server(backend, template_database, redis_databases[1], tmp_path_factory.mktemp("proxied"),
                        MAX_CONNECTIONS_PER_ADDRESS="3", TRUST_PROXY="true") as server:
        yield server


def test_behind_a_trusted_proxy_the_cap_does_not_count_the_proxy_connections(proxied):
    held = [proxied.connect() for _ in range(5)]
    try:
        wait_until_accepted(proxied, held)
        assert requests.get(proxied.url + "/api/health", timeout=GIVE_UP).status_code == 200
    finally:
        for sock in held:
            sock.close()
