"""The one JSON error envelope, produced only by exception views.

Services raise domain errors (`Conflict`, `NotFound`, ...); Pyramid's own exceptions
(no route, no view for this method, ACL denial) and anything unexpected are mapped here
too, so clients meet a single shape: `{"success": false, "message", "code", "details"}`.
The HTTP layer (`serving.py`) answers what never reaches the app (bad framing, slow
clients, too many connections) with the same envelope, built by `error_envelope`.

A store that cannot be reached (`outages.is_outage`: Redis, or the database refused,
lost, its pool exhausted, SQLite locked) is a 503 `service_unavailable` with
`Retry-After`, which clients retry; any other failure is a bug, a 500 `internal_error`
that shows nothing of the internals.
"""

import json
import logging

from pyramid.exceptions import PredicateMismatch
from pyramid.httpexceptions import HTTPException
from pyramid.response import Response

from aisystant_server import logs, metrics
from aisystant_server.i18n import Msg, translate
from aisystant_server.outages import is_outage

log = logging.getLogger(__name__)


class AppError(Exception):
    status = 400
    code = "bad_request"
    message_key = "validation_failed"

    def __init__(self, message=None, details=None, headers=None):
        super().__init__(self.code)
        self.message = message or Msg(self.message_key)
        self.details = details
        self.headers = headers or {}


class BadRequest(AppError):
    """A request the HTTP layer cannot read: bad framing, an undecodable URL."""

    status, code, message_key = 400, "bad_request", "bad_request"


class ValidationFailed(AppError):
    status, code, message_key = 400, "validation_failed", "validation_failed"


class Unauthorized(AppError):
    status, code, message_key = 401, "unauthorized", "unauthorized"


class InvalidCredentials(AppError):
    status, code, message_key = 401, "invalid_credentials", "invalid_credentials"


class NotFound(AppError):
    status, code, message_key = 404, "not_found", "not_found"


class Conflict(AppError):
    status, code, message_key = 409, "conflict", "conflict"


class PayloadTooLarge(AppError):
    status, code, message_key = 413, "payload_too_large", "payload_too_large"


class RequestTimeout(AppError):
    status, code, message_key = 408, "request_timeout", "request_timeout"


class UriTooLong(AppError):
    status, code, message_key = 414, "uri_too_long", "uri_too_long"


class HeadersTooLarge(AppError):
    status, code, message_key = 431, "headers_too_large", "headers_too_large"


class UnsupportedMediaType(AppError):
    status, code, message_key = 415, "unsupported_media_type", "unsupported_media_type"


class RateLimited(AppError):
    status, code, message_key = 429, "rate_limited", "rate_limited"

    def __init__(self, retry_after, message_key="rate_limited"):
        retry_after = max(1, int(retry_after))
        super().__init__(Msg(message_key, seconds=retry_after), details={"retry_after": retry_after},
                         headers={"Retry-After": str(retry_after)})


class LLMFailed(AppError):
    status, code, message_key = 502, "llm_failed", "service_unavailable"


class LLMNotConfigured(AppError):
    status, code, message_key = 503, "llm_not_configured", "service_unavailable"


class InternalError(AppError):
    status, code, message_key = 500, "internal_error", "internal_error"


RETRY_AFTER_SECONDS = 5


class ServiceUnavailable(AppError):
    status, code, message_key = 503, "service_unavailable", "service_unavailable"

    def __init__(self, message=None):
        super().__init__(message, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


def envelope_response(request, status, code, message, details=None, headers=None):
    return _envelope(status, code, message, details, headers, lambda text: translate(request, text),
                     logs.request_id(request.environ))


def error_envelope(error, language, request_id=None):
    """An `AppError` as the envelope, for the HTTP layer, which answers before there is
    a Pyramid request (so the language and the request id come from the caller; a new
    id without one)."""
    return _envelope(error.status, error.code, error.message, error.details, error.headers,
                     lambda text: text.render(language) if isinstance(text, Msg) else str(text),
                     request_id or logs.new_request_id())


def envelope_body(code, message, details, translated, request_id):
    """The error envelope: the body of an error response, and of a socket event's error
    acknowledgement. `request_id` finds the lines in the log: what a user reports."""
    body = {"success": False, "message": translated(message), "code": code, "request_id": request_id}
    if details:
        body["details"] = {field: text if isinstance(text, (int, float)) else translated(text)
                           for field, text in details.items()}
    return body


def _envelope(status, code, message, details, headers, translated, request_id):
    body = envelope_body(code, message, details, translated, request_id)
    response = Response(
        body=json.dumps(body, ensure_ascii=False).encode("utf-8"),
        status=status,
        content_type="application/json",
        charset="utf-8",
    )
    response.headers.update(headers or {})
    response.headers[logs.REQUEST_ID_HEADER] = request_id
    return response


def app_error_view(exc, request):
    return envelope_response(request, exc.status, exc.code, exc.message, exc.details, exc.headers)


def forbidden_view(exc, request):
    if request.identity is None:
        key = "invalid_token" if _credentials(request) else "unauthorized"
        return envelope_response(request, 401, "unauthorized", Msg(key),
                                 headers={"WWW-Authenticate": "Bearer"})
    return envelope_response(request, 403, "forbidden", Msg("forbidden"))


def _credentials(request):
    from aisystant_server.security import presented_credentials

    return presented_credentials(request)


def not_found_view(exc, request):
    return envelope_response(request, 404, "not_found", Msg("not_found"))


def method_not_allowed_view(exc, request):
    # A view exists for this resource, but none for this method.
    allowed = allowed_methods(request)
    return envelope_response(request, 405, "method_not_allowed", Msg("method_not_allowed"),
                             headers={"Allow": ", ".join(allowed)} if allowed else None)


def allowed_methods(request):
    """The methods some registered view serves for this request's route, context and
    view name, from Pyramid's introspector (so a new view is never missing from `Allow`)."""
    route = request.matched_route.name if request.matched_route else None
    methods = set()
    for entry in request.registry.introspector.get_category("views"):
        view = entry["introspectable"]
        context = view["context"]
        if (view["route_name"] != route or view["name"] != request.view_name
                or (context is not None and not isinstance(request.context, context))):
            continue
        declared = view["request_methods"] or ()
        methods.update((declared,) if isinstance(declared, str) else declared)
    if "GET" in methods:
        methods.add("HEAD")  # Pyramid serves HEAD with a GET view
    return sorted(methods)


HTTP_CODES = {400: "validation_failed", 401: "unauthorized", 403: "forbidden", 404: "not_found",
              405: "method_not_allowed", 409: "conflict", 413: "payload_too_large",
              415: "unsupported_media_type", 429: "rate_limited", 503: "service_unavailable"}


def http_exception_view(exc, request):
    code = HTTP_CODES.get(exc.status_code, "internal_error" if exc.status_code >= 500 else "bad_request")
    key = code if code in ("not_found", "forbidden", "unauthorized", "method_not_allowed",
                           "payload_too_large", "service_unavailable") else "validation_failed"
    if exc.status_code >= 500:
        key = "internal_error"
    return envelope_response(request, exc.status_code, code, Msg(key))


def internal_error_view(exc, request):
    if is_outage(exc):
        # Redis (revoked tokens, queues, streams) or the database is down: the request
        # cannot be served safely, but the client should retry rather than report a bug.
        log.error("store unavailable on %s %s: %s", request.method, _path(request), exc)
        metrics.store_error(exc)
        return app_error_view(ServiceUnavailable(), request)
    log.error("unhandled error on %s %s", request.method, _path(request), exc_info=exc)
    return app_error_view(InternalError(), request)


def _path(request):
    # The raw path: `request.path` decodes it, and may fail on the very request being reported.
    return request.environ.get("PATH_INFO", "")


def includeme(config):
    config.add_exception_view(app_error_view, context=AppError)
    config.add_forbidden_view(forbidden_view)
    config.add_exception_view(method_not_allowed_view, context=PredicateMismatch)
    config.add_notfound_view(not_found_view)
    config.add_exception_view(http_exception_view, context=HTTPException)
    config.add_exception_view(internal_error_view, context=Exception)
