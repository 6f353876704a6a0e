"""The Redis connection: a real server when `REDIS_URL` is set, an in-process one otherwise.

Queues, reply streams, rate-limit counters and revoked tokens all live in Redis. The
embedded default (no `REDIS_URL`) keeps the very same code paths by giving them
fakeredis, an in-process Redis shared by everything in this process: the web server,
the in-process worker and the event relay.
"""

import logging
import threading
import time

import fakeredis
import redis

log = logging.getLogger(__name__)
_embedded_server = None
MAX_CONNECTIONS = 5000
# Real Redis deletes expired keys by itself, ten times a second; fakeredis only when a
# command reads the key, or lists or counts the keys.
EXPIRED_KEYS_SWEEP_SECONDS = 1.0


def is_embedded(settings):
    return not settings.get("redis.url")


def make_redis(settings):
    """A client as RQ needs it (bytes, not decoded strings)."""
    global _embedded_server
    if not is_embedded(settings):
        # redis-py 8 times reads out after 5 s by default: shorter than our blocking
        # reads (stream waits of 5 s, RQ's dequeue), which would then fail as errors.
        # It also caps a pool at 100 connections, and a gevent process may have hundreds
        # of requests in flight, each holding one for the length of a command.
        return redis.Redis.from_url(settings["redis.url"], socket_timeout=60, socket_connect_timeout=5,
                                    socket_keepalive=True, health_check_interval=30,
                                    max_connections=MAX_CONNECTIONS)
    if _embedded_server is None:
        _embedded_server = fakeredis.FakeServer()
        _sweep_expired_keys(fakeredis.FakeRedis(server=_embedded_server))
    return fakeredis.FakeRedis(server=_embedded_server)


def _sweep_expired_keys(client):
    """Count the keys now and then, which has fakeredis drop those that expired: without it,
    every reply's stream and job, every rate-limit counter, would stay in the process's
    memory for good. (A thread: a greenlet once gevent has patched the process.)"""
    def sweep():
        while True:
            time.sleep(EXPIRED_KEYS_SWEEP_SECONDS)
            try:
                client.dbsize()
            except Exception:  # noqa: BLE001 - the sweeper must outlive any one failure
                log.exception("embedded Redis: sweeping expired keys failed")

    threading.Thread(target=sweep, name="aisystant-expired-keys", daemon=True).start()


def channel(source, name):
    """The pub/sub channel `name` of this deployment. Redis pub/sub ignores database
    numbers: deployments (or test sessions) sharing a Redis server on different databases
    would hear each other's events and cancels on a shared name. `source` is a Redis
    URL or client."""
    if isinstance(source, str):
        database = redis.connection.parse_url(source).get("db", 0)
    else:
        database = source.connection_pool.connection_kwargs.get("db", 0)
    return f"aisystant:{database}:{name}"


def includeme(config):
    config.registry["redis"] = make_redis(config.get_settings())
    config.add_request_method(lambda request: request.registry["redis"], "redis", reify=True)
