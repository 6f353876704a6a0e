"""AiSystant's service: REST API, reply workers and real-time events.

This module stays free of heavy imports: `aisystant-server serve` and `worker` must
monkey-patch with gevent before anything imports sockets, threads or ssl.
"""

from importlib.metadata import version as _version

__version__ = _version("aisystant")


def main(global_config, **settings):
    """The WSGI app (the `paste.app_factory` that `pserve` and the server command load)."""
    from pyramid.config import Configurator

    with Configurator(settings=settings) as config:
        config.include(".settings")  # environment overrides, production refuses weak secrets
        config.include(".access")  # request ids, the access log and the request metrics
        config.include(".i18n")  # French by default, English on Accept-Language
        config.include(".db")  # engines, request.db (joined to pyramid_tm when it writes), pyramid_retry
        config.include(".redis_connection")  # request.redis: Redis, or in-process when embedded
        config.include(".stream_hub")  # one reader of reply streams for the process's waiting clients
        config.include(".events")  # the process's emitter of real-time events (Socket.IO)
        config.include(".security")  # JWT inside a Pyramid 2 security policy, revocation
        config.include(".http")  # security headers, CORS, request body cap
        config.include(".ratelimit")  # /api rate limit in Redis
        config.include(".errors")  # the one JSON error envelope, from exception views
        config.include(".views")  # routes, traversal roots and views
    _one_request_class(config.registry)
    return config.make_wsgi_app()


def _one_request_class(registry):
    """Give every request of the app one class that carries the properties the modules
    add with `add_request_method(..., reify=True)` (request.db, request.tm, ...).

    Pyramid would apply them to each request by making a subclass for it: a `type()` call
    per request, after which every attribute lookup on that request starts from an empty
    type cache. Made once here, the same properties cost nothing per request (0.90x of
    a read's CPU in process, bench/inprocess.py)."""
    from pyramid.interfaces import IRequestExtensions, IRequestFactory
    from pyramid.request import Request

    extensions = registry.queryUtility(IRequestExtensions)
    factory = registry.queryUtility(IRequestFactory, default=Request)
    if extensions is None or not extensions.descriptors or not isinstance(factory, type):
        return
    registry.registerUtility(type(factory.__name__, (factory,), dict(extensions.descriptors)), IRequestFactory)
    extensions.descriptors.clear()
