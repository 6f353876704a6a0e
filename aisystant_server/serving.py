"""The HTTP edge of `aisystant-server serve`: gevent's WSGI server and our connection handler.

gevent's pywsgi is lenient where a server that may sit behind a proxy must not be, so
`EdgeHandler` (a `geventwebsocket` handler: engineio needs it for websocket upgrades)
adds, per connection:

- Framing. A request whose body a proxy could delimit differently (a Transfer-Encoding
  other than exactly `chunked`, or with Content-Length, or on HTTP/1.0; Content-Lengths
  that differ or are not plain digits; a header name with a space before its colon; an
  obsolete line folding; a bare CR or LF; no or several Host) is refused with 400 and the
  connection closed. Accepting it would let a proxy that reads it the other way see our
  answer to a request it never forwarded (request smuggling).
- Timeouts, as totals rather than idle timers (a byte every few seconds must not keep a
  connection): the headers within `http.header_timeout` of their first byte, the body
  within `http.body_timeout` of its first read; an idle connection closes after
  `http.keepalive_timeout` (`http.header_timeout` if it never sent a request). Nothing
  runs once the app answers, so SSE streams and websockets last as long as they need.
- At most `http.max_connections_per_address` connections open per peer address (503
  beyond). Behind a reverse proxy (TRUST_PROXY) every connection comes from the proxy,
  so the cap is off there: the proxy limits its clients (e.g. nginx's `limit_conn`).
- The body cap (MAX_BODY_BYTES) as the body arrives: pyramid_retry copies the whole body
  before the app runs (to replay it), so the app's own cap would only come after the read.
- TCP_NODELAY: pywsgi sends a response's headers and body in two writes; with Nagle's
  algorithm on, the second waits for the client's delayed ACK, ~40 ms on every request of
  a keep-alive connection after the first.

What the handler answers itself (400, 408, 413, 414, 431, 503) is the app's envelope
(`errors.error_envelope`) with the app's security and CORS headers; it then closes the
connection after a short lingering read, so the client gets the answer, not a reset.

The limits live on the handler class (`handler_class(settings)`), not on the server, so
that gunicorn's gevent worker can take the same class as its `wsgi_handler`.
"""

import collections
import gc
import dataclasses
import logging
import re
import socket
import time

import gevent
import webob
from gevent import pywsgi
from geventwebsocket.handler import WebSocketHandler

from aisystant_server import errors
from aisystant_server.http import edge_headers
from aisystant_server.i18n import DEFAULT_LANGUAGE, Msg, negotiate_language
from aisystant_server.logs import REQUEST_ID_HEADER, new_request_id

log = logging.getLogger(__name__)

MAX_REQUEST_LINE = pywsgi.MAX_REQUEST_LINE  # 8 KiB, then 414
MAX_HEADER_BYTES = 32 * 1024  # the header section, then 431
MAX_HEADERS = 100  # http.client's own limit
LINGER_SECONDS = 2
TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110's header field name
DIGITS = re.compile(r"[0-9]{1,18}")


@dataclasses.dataclass(frozen=True)
class Limits:
    header_timeout: float = 20.0
    body_timeout: float = 60.0
    keepalive_timeout: float = 75.0
    max_connections_per_address: int = 100  # 0: no cap
    max_body_bytes: int = 1024 * 1024
    cors_origins: frozenset = frozenset()

    @classmethod
    def from_settings(cls, settings):
        return cls(header_timeout=settings["http.header_timeout"], body_timeout=settings["http.body_timeout"],
                   keepalive_timeout=settings["http.keepalive_timeout"],
                   max_connections_per_address=(0 if settings["aisystant.trust_proxy"]
                                                else settings["http.max_connections_per_address"]),
                   max_body_bytes=settings["aisystant.max_body_bytes"],
                   cors_origins=frozenset(settings["cors.origins"]))


class _TooSlow(Exception):
    """The body's deadline passed during a read."""


class _Silent(Exception):
    """No request began on an open connection in time."""


class RequestBody(pywsgi.Input):
    """The request body as the app reads it: at most `max_body_bytes`, in full within
    `body_timeout` of the first read. Whatever goes wrong is raised as an `AppError`
    (400, 408, 413) and sets `failed`, after which the connection is closed."""

    __slots__ = ("limits", "deadline", "received", "failed")

    def __init__(self, raw, limits):
        super().__init__(raw.rfile, raw.content_length, socket=raw.socket, chunked_input=raw.chunked_input)
        self.limits, self.deadline, self.received, self.failed = limits, None, 0, False

    def read(self, length=None):
        return self._guarded(super().read, length)

    def readline(self, size=None):
        return self._guarded(super().readline, size)

    def _guarded(self, method, size):
        cap = self.limits.max_body_bytes
        if self.failed:
            raise errors.BadRequest()
        if (self.content_length or 0) > cap:
            raise self._fail(errors.PayloadTooLarge(Msg("payload_too_large", limit=cap)))
        if self.deadline is None:
            self.deadline = time.monotonic() + self.limits.body_timeout
        try:
            with gevent.Timeout(max(self.deadline - time.monotonic(), 0.001), _TooSlow):
                data = method(size)
        except _TooSlow:
            raise self._fail(errors.RequestTimeout()) from None
        except (OSError, ValueError):
            # pywsgi's bad chunk framing (an IOError), or a client gone mid-body.
            raise self._fail(errors.BadRequest()) from None
        self.received += len(data)
        if self.received > cap:  # chunked: no length announced
            raise self._fail(errors.PayloadTooLarge(Msg("payload_too_large", limit=cap)))
        return data

    def _fail(self, error):
        self.failed = True
        return error

    def _discard(self):
        # What the app left unread is drained, within the cap and the deadline, so the
        # connection can carry the next request; failing that, it is closed. A client
        # that waits for `100 Continue` was never told to send: closing is the answer.
        if self.failed:
            return
        if self.socket is not None and (self.chunked_input or (self.content_length or 0) > self.position):
            self.failed = True
            return
        try:
            while self.read(16384):
                pass
        except errors.AppError:
            pass


class EdgeHandler(WebSocketHandler):
    """One connection: framing checks, timeouts, the per-address cap, TCP_NODELAY."""

    limits = Limits()
    # Open connections per peer address, in this process (one per handler class).
    connections = collections.Counter()
    _refusal = None
    _header_timer = None
    _served = 0

    def __init__(self, sock, address, server, rfile=None):
        super().__init__(sock, address, server, rfile)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass  # not TCP (a Unix socket)

    # -- the connection

    def handle(self):
        peer = self.client_address[0] if isinstance(self.client_address, tuple) else ""
        cap = self.limits.max_connections_per_address
        if cap and self.connections[peer] >= cap:
            log.warning("connection from %s refused: %d already open", peer, cap)
            self._refusal = errors.ServiceUnavailable(Msg("too_many_connections"))
            return super().handle()  # answers the refusal at once, then closes
        self.connections[peer] += 1
        try:
            return super().handle()
        finally:
            self.connections[peer] -= 1
            if not self.connections[peer]:
                del self.connections[peer]

    def handle_one_request(self):
        try:
            if self._refusal is not None:
                raise self._refusal
            result = super().handle_one_request()
        except errors.AppError as error:  # from the request line; the headers' come via _handle_client_error
            result = self._refuse(error)
        finally:
            self._stop_header_timer()
        if isinstance(result, tuple):
            self._send(result[1])
            self._linger()
            return None
        if isinstance(self.wsgi_input, RequestBody) and self.wsgi_input.failed:
            self._linger()
            return None
        self._served += bool(result)
        return result

    # -- reading a request

    def read_requestline(self):
        if not self._request_begins():
            return ""  # pywsgi closes the connection without a word
        self._header_timer = gevent.Timeout.start_new(self.limits.header_timeout, errors.RequestTimeout())
        line = self.rfile.readline(MAX_REQUEST_LINE)
        if len(line) >= MAX_REQUEST_LINE:
            raise errors.UriTooLong()
        if line and not line.endswith(b"\r\n"):
            raise errors.BadRequest()
        return line.decode("latin-1")

    def _request_begins(self):
        """Whether a request's first byte arrives in time (the keep-alive idle timeout,
        or the header timeout on a connection that has not sent a request yet)."""
        wait = self.limits.keepalive_timeout if self._served else self.limits.header_timeout
        try:
            with gevent.Timeout(wait, _Silent):
                return bool(self.rfile.peek(1))
        except (_Silent, OSError, ValueError):
            return False

    def read_request(self, raw_requestline):
        try:
            return super().read_request(raw_requestline)
        finally:
            self._stop_header_timer()

    def MessageClass(self, rfile, *args):  # noqa: N802 (pywsgi's hook for reading the headers)
        if self.request_version == "HTTP/0.9":
            raise errors.BadRequest()
        # The header object pywsgi makes, filled here: its own parser (the email
        # package's) read the lines again, at ten times the cost.
        headers, size, count = pywsgi.OldMessage(), 0, 0
        while True:
            line = rfile.readline(MAX_HEADER_BYTES - size + 1)
            size += len(line)
            if size > MAX_HEADER_BYTES or count >= MAX_HEADERS:
                raise errors.HeadersTooLarge()
            if not line.endswith(b"\r\n") or b"\r" in line[:-2] or b"\0" in line:
                raise errors.BadRequest()  # cut short, a bare LF or CR, a NUL
            if line == b"\r\n":
                break
            name, colon, value = line.partition(b":")
            if not colon or not TOKEN.fullmatch(name):
                raise errors.BadRequest()  # `Name : value`, an obsolete folding, no colon
            headers[name.decode("latin-1")] = value.decode("latin-1").lstrip(" \t").rstrip("\r\n")
            count += 1
        # Kept at once, so that a refusal below speaks the client's language and CORS.
        self.headers = headers
        self._check_framing(self.headers)
        return self.headers

    def _check_framing(self, headers):
        """400 unless the body's length can be read one way only; leaves one clean
        Transfer-Encoding or Content-Length header for pywsgi."""
        codings = [coding.strip().lower() for value in headers.get_all("Transfer-Encoding", [])
                   for coding in value.split(",")]
        lengths = {length.strip() for value in headers.get_all("Content-Length", []) for length in value.split(",")}
        if codings:
            if codings != ["chunked"] or lengths or self.request_version != "HTTP/1.1":
                raise errors.BadRequest()
            del headers["Transfer-Encoding"]
            headers["Transfer-Encoding"] = "chunked"
        if lengths:
            length = lengths.pop() if len(lengths) == 1 else ""
            if not DIGITS.fullmatch(length):
                raise errors.BadRequest()
            del headers["Content-Length"]
            headers["Content-Length"] = length
        hosts = headers.get_all("Host", [])
        if len(hosts) > 1 or (not hosts and self.request_version == "HTTP/1.1"):
            raise errors.BadRequest()

    def get_environ(self):
        environ = super().get_environ()
        raw, self.wsgi_input = self.wsgi_input, RequestBody(self.wsgi_input, self.limits)
        if environ["wsgi.input"] is raw:  # not a websocket upgrade, which reads the socket itself
            environ["wsgi.input"] = self.wsgi_input
        return environ

    # -- answering

    def run_application(self):
        try:
            super().run_application()
        except errors.AppError as error:
            # From the request body, read before the app's exception views could see it
            # (pyramid_retry copies the body first).
            if not (isinstance(self.wsgi_input, RequestBody) and self.wsgi_input.failed) or self.headers_sent:
                raise
            response = self._envelope(error)
            log.info("request from %s refused while reading its body: %s", self.client_address, error.code,
                     extra={"request_id": response.headers[REQUEST_ID_HEADER]})
            self.close_connection = True
            self.start_response(response.status, response.headerlist)
            self.write(response.body)

    def _handle_client_error(self, ex):
        """pywsgi's hook for a request it cannot parse: our envelope rather than its
        empty text/plain 400."""
        if not isinstance(ex, errors.AppError):
            ex = errors.BadRequest()
        return self._refuse(ex)

    def _send_error_response_if_possible(self, error_code):
        """pywsgi's last resort (a failure outside the app's error views): the envelope too."""
        if self.response_length:
            self.close_connection = True
            return
        response = self._envelope(errors.BadRequest() if error_code == 400 else errors.InternalError())
        self.close_connection = True
        try:
            self.start_response(response.status, response.headerlist)
            self.write(response.body)
        except OSError:
            pass

    def _refuse(self, error):
        response = self._envelope(error)
        log.info("request from %s refused: %s", self.client_address, error.code,
                 extra={"request_id": response.headers[REQUEST_ID_HEADER]})
        response.date = time.time()
        head = f"HTTP/1.1 {response.status}\r\n" + "".join(f"{name}: {value}\r\n"
                                                          for name, value in response.headerlist)
        return str(error.status), head.encode("latin-1") + b"\r\n" + response.body

    def _envelope(self, error):
        origin = self.headers.get("Origin")
        language = self.headers.get("Accept-Language")
        language = negotiate_language(webob.BaseRequest({"HTTP_ACCEPT_LANGUAGE": language})) if language \
            else DEFAULT_LANGUAGE
        # The request's own id if it sent a sane one (a proxy's), else a new one.
        response = errors.error_envelope(error, language, new_request_id(self.headers.get(REQUEST_ID_HEADER)))
        response.headers.update(edge_headers(self.limits.cors_origins, origin))
        response.headers["Connection"] = "close"
        return response

    def log_request(self):
        # Not pywsgi's access line, nor geventwebsocket's: the access tween (access.py)
        # logs every request the app answers. pywsgi's was never written (`serve` gives
        # its server no log, gunicorn's drops it below WARNING) but was formatted, with
        # the time, at every request.
        pass

    # -- closing

    def _send(self, data):
        try:
            self.socket.sendall(data)
            self.response_length = len(data)
        except OSError:
            pass

    def _linger(self):
        """Half-close, then read what the client still sends for a moment: closing with
        unread data resets the connection, and the client could lose our answer."""
        try:
            self.socket.shutdown(socket.SHUT_WR)
            with gevent.Timeout(LINGER_SECONDS, False):
                while self.socket.recv(65536):
                    pass
        except OSError:
            pass

    def _stop_header_timer(self):
        if self._header_timer is not None:
            self._header_timer.close()
            self._header_timer = None


def handler_class(settings):
    """A handler class with these settings' limits and a connection count of its own."""
    return type("EdgeHandler", (EdgeHandler,), {"limits": Limits.from_settings(settings),
                                                "connections": collections.Counter()})


def settle_memory():
    """Once the app is loaded: what exists now lives as long as the process, so the
    garbage collector stops scanning it (`gc.freeze`), and young collections come less
    often. Full collections over thousands of connections' objects paused the event
    loop for 100-450 ms (Socket.IO delivery's p99 at 2,000 clients)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 50)


def make_server(app, settings):
    """The server of `aisystant-server serve` on HOST:PORT (not started)."""
    address = (settings["aisystant.host"], settings["aisystant.port"])
    return pywsgi.WSGIServer(address, app, handler_class=handler_class(settings), log=None, error_log=log)
