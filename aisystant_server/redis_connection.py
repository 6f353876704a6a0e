"""The Redis connection: a real server when `REDIS_URL` is set, an in-process one otherwise.

Queues, reply streams, rate-limit counters and revoked tokens all live in Redis. The
embedded default (no `REDIS_URL`) keeps the very same code paths by giving them
fakeredis, an in-process Redis shared by everything in this process: the web server,
the in-process worker and the event relay.
"""

import fakeredis
import redis

_embedded_server = None


def is_embedded(settings):
    return not settings.get("redis.url")


def make_redis(settings):
    """A client as RQ needs it (bytes, not decoded strings)."""
    global _embedded_server
    if not is_embedded(settings):
        return redis.Redis.from_url(settings["redis.url"], health_check_interval=30)
    if _embedded_server is None:
        _embedded_server = fakeredis.FakeServer()
    return fakeredis.FakeRedis(server=_embedded_server)


def includeme(config):
    config.registry["redis"] = make_redis(config.get_settings())
    config.add_request_method(lambda request: request.registry["redis"], "redis", reify=True)
