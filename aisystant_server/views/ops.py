import logging

import redis
import sqlalchemy as sa
from pyramid.security import NO_PERMISSION_REQUIRED

from aisystant_server import __version__
from aisystant_server.i18n import Msg, translate
from aisystant_server.openapi import openapi_document
from aisystant_server.redis_connection import is_embedded
from aisystant_server.views import api_view

log = logging.getLogger(__name__)

ENDPOINTS = {
    "auth": "/api/auth",
    "chat": "/api/chat",
    "health": "/api/health",
    "openapi": "/api/openapi.json",
}


@api_view(route_name="home", request_method="GET", permission=NO_PERMISSION_REQUIRED)
def home(request):
    return {"success": True, "message": f"AiSystant API v{__version__}", "endpoints": ENDPOINTS}


@api_view(route_name="health", request_method="GET", permission=NO_PERMISSION_REQUIRED)
def health(request):
    state = {"database": _database_state(request), "redis": _redis_state(request)}
    healthy = state["database"] == "ok" and state["redis"] in ("ok", "embedded")
    request.response.status_int = 200 if healthy else 503
    # Workers are reported, not required: an API without workers still serves
    # conversations, and a load balancer should not take it out for that.
    body = {"success": healthy, "data": {"status": "ok" if healthy else "unavailable", **state,
                                         "workers": _worker_count(request) if healthy else None}}
    if not healthy:
        body.update(code="service_unavailable", message=translate(request, Msg("service_unavailable")))
    return body


def _database_state(request):
    try:
        with request.registry["db.engine"].connect() as connection:
            connection.execute(sa.text("SELECT 1"))
        return "ok"
    except sa.exc.SQLAlchemyError:
        log.exception("health: database unreachable")
        return "error"


def _redis_state(request):
    if is_embedded(request.registry.settings):
        return "embedded"
    try:
        request.redis.ping()
        return "ok"
    except redis.RedisError:
        log.exception("health: Redis unreachable")
        return "error"


def _worker_count(request):
    from rq import Worker

    try:
        return Worker.count(connection=request.redis)
    except redis.RedisError:
        return None


@api_view(route_name="openapi", request_method="GET", permission=NO_PERMISSION_REQUIRED)
def openapi(request):
    return openapi_document()
