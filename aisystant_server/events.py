"""The one way to emit a real-time event: python-socketio's own client manager.

Every producer (a view, a reply job, the Socket.IO handlers) calls `emit` with the
process's emitter, which is one of:

- the process's Socket.IO server (`serve`, `events`): it delivers to its own clients
  and, through its `RedisManager`, to every other process's;
- in a process without one (a worker, `pserve`), a write-only `RedisManager`, which only
  publishes for the processes that serve clients;
- in the embedded mode without a Socket.IO server (nothing to deliver to), `NO_CLIENTS`.

Redis pub/sub can lose what is published while a listener reconnects: clients never
depend on it alone. Text is recoverable from the reply's stream (streams.py), and
joining a conversation replays what a client missed (realtime/handlers.py).
"""

import logging

import socketio

from aisystant_server.redis_connection import channel, is_embedded

log = logging.getLogger(__name__)
NAMESPACE = "/"


class _NoClients:
    """The emitter of an embedded process that serves no Socket.IO clients."""

    def emit(self, *args, **kwargs):
        pass


NO_CLIENTS = _NoClients()


def conversation_room(conversation_id):
    return f"conversation:{conversation_id}"


def manager(settings, write_only):
    """python-socketio's Redis client manager for this deployment (distributed mode)."""
    # No socket_timeout on the listening connection: python-socketio would take each
    # quiet period for a failure and subscribe again forever.
    return socketio.RedisManager(settings["redis.url"], channel=channel(settings["redis.url"], "socketio"),
                                 write_only=write_only,
                                 redis_options={"socket_connect_timeout": 5, "socket_keepalive": True,
                                                "health_check_interval": 30})


def publisher(settings):
    """The emitter of a process that serves no Socket.IO clients itself."""
    return NO_CLIENTS if is_embedded(settings) else manager(settings, write_only=True)


def emit(emitter, event, data, conversation_id, skip_sid=None):
    """Send `event` to the conversation's room, wherever its clients are connected."""
    try:
        emitter.emit(event, data, room=conversation_room(conversation_id), skip_sid=skip_sid, namespace=NAMESPACE)
    except Exception:  # noqa: BLE001 - a lost event is not lost data (see the module docstring)
        log.exception("could not emit %s", event)


def includeme(config):
    config.registry["events"] = publisher(config.get_settings())
