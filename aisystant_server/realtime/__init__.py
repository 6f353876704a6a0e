"""Socket.IO for web clients: python-socketio on gevent, one room per conversation.

Web clients written for the original product connect with `socket.io-client` v4
(`io(url, {auth: {token}})`), join a conversation's room and receive its events as
they happen (see CONTRACT.md, "Real-time events"). This package serves them: the
handshake's authentication, the client events (handlers.py) and the sessions that must
end when their token is revoked (sessions.py).

Where it runs: inside `aisystant-server serve`, on the REST API's port (the embedded
default keeps everything in one process: python-socketio's in-memory client manager);
and as `aisystant-server events`, a process of its own, when a deployment scales it
separately. In the distributed mode every Socket.IO process uses python-socketio's
`RedisManager`, so an event emitted anywhere (an API process, a worker, another events
process) reaches the clients of every process: the events module says how producers emit.
"""

import socketio

from aisystant_server import events
from aisystant_server.errors import NotFound, error_envelope
from aisystant_server.i18n import DEFAULT_LANGUAGE
from aisystant_server.realtime.handlers import Handlers
from aisystant_server.realtime.sessions import Sessions
from aisystant_server.redis_connection import is_embedded

SOCKETIO_PATH = "socket.io"


def allowed_origin(settings):
    """A browser origin may connect if CORS_ORIGIN names it (or is `*`), or if it is the
    server's own origin (a page served from the same host)."""
    origins = set(settings["cors.origins"])

    def allowed(origin, environ):
        if origin is None or "*" in origins or origin in origins:
            return True
        host = environ.get("HTTP_HOST")
        return host is not None and origin in (f"http://{host}", f"https://{host}")

    return allowed


def make_server(registry):
    """The process's Socket.IO server, which becomes the process's emitter."""
    settings = registry.settings
    manager = None if is_embedded(settings) else events.manager(settings, write_only=False)
    sio = socketio.Server(
        async_mode="gevent",
        client_manager=manager,
        cors_allowed_origins=allowed_origin(settings),
        # Never more than a REST body: a `new_message` carries what a POST would.
        max_http_buffer_size=settings["aisystant.max_body_bytes"],
        logger=False,
        engineio_logger=False,
    )
    sessions = Sessions(sio, registry)
    Handlers(sio, registry, sessions).register()
    sessions.start()
    registry["events"] = sio
    return sio


def wrap(app):
    """`app` (the Pyramid app) with the Socket.IO endpoint at /socket.io/ in front of it."""
    return socketio.WSGIApp(make_server(app.registry), app, socketio_path=SOCKETIO_PATH)


def health_only(app):
    """The HTTP side of the events role: the health report; a JSON 404 for the rest."""

    def events_app(environ, start_response):
        if environ.get("PATH_INFO") in ("/", "/api/health"):
            return app(environ, start_response)
        return error_envelope(NotFound(), DEFAULT_LANGUAGE)(environ, start_response)

    events_app.registry = app.registry
    return events_app
