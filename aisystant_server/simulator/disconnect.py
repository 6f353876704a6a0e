"""Waiting, without answering, until the client gives up.

A scripted hang must hold the request open like a stuck upstream, yet not keep a
greenlet alive for ever once the client has gone: the server puts the client's
socket in the WSGI environ, and a hang waits until that socket reads as closed.
"""

from __future__ import annotations

import socket

import gevent

SOCKET_ENVIRON_KEY = "aisystant.simulator.socket"
# Under a WSGI server that does not expose the socket, a hang ends after this long.
HANG_LIMIT_SECONDS = 3600.0
# A client that sends more bytes while it waits (it should not) is polled this often.
STRAY_INPUT_POLL_SECONDS = 1.0


def wait_until_client_gone(environ: dict) -> None:
    client = environ.get(SOCKET_ENVIRON_KEY)
    with gevent.Timeout(HANG_LIMIT_SECONDS, False):
        if client is None:
            gevent.sleep(HANG_LIMIT_SECONDS)
        else:
            _wait_for_end_of_stream(client)


def _wait_for_end_of_stream(client: socket.socket) -> None:
    while True:
        try:
            # A gevent socket waits cooperatively; peeking leaves any bytes for the server.
            if not client.recv(1, socket.MSG_PEEK):
                return
        except TimeoutError:
            continue
        except OSError:
            return
        gevent.sleep(STRAY_INPUT_POLL_SECONDS)
