"""Serving the simulator with gevent's WSGI server until SIGTERM or SIGINT.

One greenlet per connection keeps 500+ concurrent streams cheap. Everything here
uses gevent's own sockets and sleeps, so it works whether or not the process was
monkey-patched; `python -m aisystant_server.simulator` patches anyway.
"""

from __future__ import annotations

import signal
import socket
import sys

import gevent
from gevent.event import Event
from gevent.pywsgi import WSGIHandler, WSGIServer

from .app import make_app
from .cli import ServerOptions, parse_args
from .control_endpoint import SIMULATOR_NAME
from .disconnect import SOCKET_ENVIRON_KEY

# Room for a benchmark that opens hundreds of connections in the same instant.
LISTEN_BACKLOG = 4096
# Streams still open at shutdown (hangs, mostly) get this long before they are cut.
SHUTDOWN_GRACE_SECONDS = 1.0


class SimulatorHandler(WSGIHandler):
    def handle(self):
        # Each event is a small write: without this, Nagle's algorithm can hold a
        # token back until the previous one is acknowledged, skewing the timing.
        try:
            self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        return super().handle()

    def get_environ(self):
        environ = super().get_environ()
        # A scripted hang watches the socket to learn when the client has given up.
        environ[SOCKET_ENVIRON_KEY] = self.socket
        return environ


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    server = build_server(options)
    server.start()
    print(f"{SIMULATOR_NAME} listening on {listening_url(options.host, server.server_port)}", file=sys.stderr, flush=True)
    wait_for_stop_signal()
    server.stop(timeout=SHUTDOWN_GRACE_SECONDS)
    return 0


def build_server(options: ServerOptions) -> WSGIServer:
    app = make_app(
        ttft_ms=options.pace.ttft_ms,
        tokens_per_second=options.pace.tokens_per_second,
        reply_tokens=options.pace.reply_tokens,
        max_recorded_requests=options.max_recorded_requests,
    )
    return WSGIServer(
        (options.host, options.port),
        app,
        handler_class=SimulatorHandler,
        backlog=LISTEN_BACKLOG,
        log=sys.stderr if options.access_log else None,
    )


def listening_url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def wait_for_stop_signal() -> None:
    stop = Event()
    watchers = [gevent.signal_handler(signum, stop.set) for signum in (signal.SIGTERM, signal.SIGINT)]
    try:
        stop.wait()
    finally:
        for watcher in watchers:
            watcher.cancel()
