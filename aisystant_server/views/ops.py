"""Operations: the home page, health, the OpenAPI document and the Prometheus metrics."""

import logging

import redis
import sqlalchemy as sa
from pyramid.httpexceptions import HTTPForbidden
from pyramid.response import Response
from pyramid.security import NO_PERMISSION_REQUIRED

from aisystant_server import __version__, logs, metrics, migrations
from aisystant_server.i18n import Msg, translate
from aisystant_server.openapi import openapi_document
from aisystant_server.outages import log_failure
from aisystant_server.ratelimit import client_address
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
    # "ahead": a newer version migrated the database (a deploy in progress, or rolled
    # back); this one still serves, as such migrations keep what older code reads.
    healthy = state["database"] in ("ok", "ahead") and state["redis"] in ("ok", "embedded")
    request.response.status_int = 200 if healthy else 503
    # Workers are reported, not required: an API without workers still serves
    # conversations, and a load balancer should not take it out for that.
    body = {"success": healthy, "data": {"status": "ok" if healthy else "unavailable", **state,
                                         "workers": _worker_count(request) if healthy else None}}
    if not healthy:
        body.update(code="service_unavailable", message=translate(request, Msg("service_unavailable")),
                    request_id=logs.request_id(request.environ))
    return body


def _database_state(request):
    """ok, behind (not migrated, or older than the code: run `aisystant-server migrate`),
    ahead, or error (unreachable)."""
    try:
        with request.registry["db.engine"].connect() as connection:
            state, revision = migrations.revision_state(connection)
    except sa.exc.SQLAlchemyError as error:
        log_failure(log, error, "health: database unreachable")
        metrics.store_error(error)
        return "error"
    if state in (migrations.ABSENT, migrations.BEHIND):
        log.error("health: the database is at revision %s, behind the code's %s: run `aisystant-server migrate`",
                  revision, migrations.head())
        return "behind"
    return "ahead" if state == migrations.AHEAD else "ok"


def _redis_state(request):
    if is_embedded(request.registry.settings):
        return "embedded"
    try:
        request.redis.ping()
        return "ok"
    except redis.RedisError as error:
        log_failure(log, error, "health: Redis unreachable")
        metrics.store_error(error)
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


@api_view(route_name="metrics", request_method="GET", permission=NO_PERMISSION_REQUIRED)
def prometheus_metrics(request):
    """Prometheus's text format, for METRICS_ALLOW's addresses or METRICS_TOKEN's bearer
    (see metrics.py); others get 401, as an API call without a token."""
    if not metrics.allowed(client_address(request), request.headers.get("Authorization"),
                           request.registry.settings):
        raise HTTPForbidden()
    response = Response(body=metrics.exposition(metrics.ServiceCollector(request.redis)))
    response.headers["Content-Type"] = metrics.CONTENT_TYPE
    return response
