"""The connection handler of `aisystant-server serve`, in this process (gevent, not
monkey-patched): what the real server's raw-socket tests cannot see from outside."""

import base64
import os
import socket

import gevent
import gevent.socket

from aisystant_server.serving import make_server

SETTINGS = {
    "aisystant.host": "127.0.0.1", "aisystant.port": 0, "aisystant.trust_proxy": False,
    "aisystant.max_body_bytes": 1024, "cors.origins": [], "http.max_connections_per_address": 10,
    "http.header_timeout": 0.2, "http.body_timeout": 0.2, "http.keepalive_timeout": 0.2,
}


def echo(environ, start_response):
    websocket = environ.get("wsgi.websocket")
    if websocket is None:
        start_response("404 Not Found", [("Content-Length", "0")])
        return [b""]
    websocket.send(websocket.receive())
    return []


def test_accepted_connections_have_nagle_off():
    server = make_server(echo, SETTINGS)
    with socket.create_server(("127.0.0.1", 0)) as listener, socket.create_connection(listener.getsockname()):
        accepted, address = listener.accept()
        with accepted:
            assert not accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            server.handler_class(accepted, address, server)
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


def test_a_websocket_lasts_longer_than_the_header_and_body_timeouts():
    server = make_server(echo, SETTINGS)
    server.start()
    try:
        with gevent.socket.create_connection(("127.0.0.1", server.server_port)) as client:
            client.settimeout(10)
            key = base64.b64encode(os.urandom(16)).decode()
            client.sendall((f"GET /ws HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
            head = b""
            while b"\r\n\r\n" not in head:
                head += client.recv(4096)
            assert head.startswith(b"HTTP/1.1 101")
            gevent.sleep(1)  # five times every timeout of the handler
            payload, mask = b"still here", os.urandom(4)
            client.sendall(bytes([0x81, 0x80 | len(payload)]) + mask
                           + bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload)))
            frame = client.recv(4096)
            assert frame[0] == 0x81 and frame[2:2 + frame[1]] == payload
    finally:
        server.stop()
