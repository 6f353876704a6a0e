"""The one way to emit a real-time event: python-socketio's own client manager.

Every producer (a view, a reply job, the Socket.IO handlers) calls `emit` with the
process's emitter, which is one of:

- the process's Socket.IO server (`serve`, `events`): it delivers to its own clients
  and, through its `RedisManager`, to every other process's;
- in a process without one (a worker, `pserve`), a write-only `RedisManager`, which only
  publishes for the processes that serve clients;
- in the embedded mode without a Socket.IO server (nothing to deliver to), `NO_CLIENTS`.

In the distributed mode, what a process publishes leaves from one thread per process,
in order, several messages in one round trip (`PipelinedRedisManager`): whoever emits
(a reply on its way to its sender, a request) goes on at once instead of waiting for
Redis's answer to each PUBLISH, which was a round trip on the path of every reply (the
`typing` before the model call, each delta). `drain` waits for them before a process
stops.

Redis pub/sub can lose what is published while a listener reconnects: clients never
depend on it alone. Text is recoverable from the reply's stream (streams.py), and
joining a conversation replays what a client missed (realtime/handlers.py).
"""

import collections
import logging
import os
import threading
import time
import weakref

import socketio

from aisystant_server.outages import log_failure
from aisystant_server.redis_connection import channel, is_embedded

log = logging.getLogger(__name__)
NAMESPACE = "/"
# Messages one round trip carries at most.
MAX_BATCH = 200
# How long a stopping process waits for what it was given to publish.
DRAIN_SECONDS = 5
_managers = weakref.WeakSet()  # this process's PipelinedRedisManagers, for `drain`


class _NoClients:
    """The emitter of an embedded process that serves no Socket.IO clients."""

    def emit(self, *args, **kwargs):
        pass


NO_CLIENTS = _NoClients()


def conversation_room(conversation_id):
    return f"conversation:{conversation_id}"


def manager(settings, write_only):
    """The Redis client manager for this deployment (distributed mode)."""
    # No socket_timeout on the listening connection: python-socketio would take each
    # quiet period for a failure and subscribe again forever.
    return PipelinedRedisManager(settings["redis.url"], channel=channel(settings["redis.url"], "socketio"),
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
    except Exception as error:  # noqa: BLE001 - a lost event is not lost data (see the module docstring)
        log_failure(log, error, "could not emit %s", event)


def drain(timeout=DRAIN_SECONDS):
    """Wait up to `timeout` seconds for what this process's managers were given to publish
    to have left; False if some is still waiting."""
    deadline = time.monotonic() + timeout
    return all(manager.drain(max(0.0, deadline - time.monotonic())) for manager in list(_managers))


class PipelinedRedisManager(socketio.RedisManager):
    """python-socketio's Redis manager, publishing from one thread (a greenlet under
    gevent) per process, whatever waits in one pipelined round trip.

    Its `_publish` (the method a python-socketio backend implements) only queues the
    message, encoded: whoever emits goes on at once. Messages leave in the order they
    were given, and Redis delivers them in that order."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._lock = threading.Lock()
        self._pid, self._waiting, self._ready = None, collections.deque(), None
        _managers.add(self)

    def _publish(self, data):
        if self._pid != os.getpid():
            self._start()
        self._waiting.append(self.json.dumps(data))
        self._ready.set()

    def drain(self, timeout):
        if self._pid != os.getpid():
            return True  # nothing given to publish in this process
        done = threading.Event()
        self._waiting.append(done)
        self._ready.set()
        return done.wait(timeout)

    def _start(self):
        # First use, or a forked process: a thread is not inherited, nor is what it held.
        with self._lock:
            if self._pid != os.getpid():
                self._waiting, self._ready = collections.deque(), threading.Event()
                threading.Thread(target=self._send_forever, args=(self._waiting, self._ready),
                                 name="socketio-publish", daemon=True).start()
                self._pid = os.getpid()

    def _send_forever(self, waiting, ready):
        while True:
            ready.wait()
            ready.clear()
            while waiting:
                batch = [waiting.popleft() for _ in range(min(len(waiting), MAX_BATCH))]
                messages = [item for item in batch if not isinstance(item, threading.Event)]
                if messages:
                    self._send(messages)
                for item in batch:
                    if isinstance(item, threading.Event):  # a `drain` waiting for what came before
                        item.set()

    def _send(self, messages):
        # As python-socketio's own `_publish`: two attempts, the second on a new connection.
        for attempts_left in (1, 0):
            try:
                if not self.connected:
                    self._redis_connect()
                pipe = self.redis.pipeline(transaction=False)
                for message in messages:
                    pipe.publish(self.channel, message)
                pipe.execute()
                return
            except Exception as error:  # noqa: BLE001 - a lost event is not lost data
                self.connected = False
                if not attempts_left:
                    log.error("could not publish %d Socket.IO messages to Redis: %s", len(messages), error)


def includeme(config):
    config.registry["events"] = publisher(config.get_settings())
