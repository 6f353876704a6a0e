"""The one JSON error envelope, produced only by exception views.

Services raise domain errors (`Conflict`, `NotFound`, ...); Pyramid's own exceptions
(no route, no view for this method, ACL denial) and anything unexpected are mapped here
too, so clients meet a single shape: `{"success": false, "message", "code", "details"}`.
"""

import json
import logging

import redis

from pyramid.exceptions import PredicateMismatch
from pyramid.httpexceptions import HTTPException
from pyramid.response import Response

from aisystant_server.i18n import Msg, translate

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


def envelope_response(request, status, code, message, details=None, headers=None):
    body = {"success": False, "message": translate(request, message), "code": code}
    if details:
        body["details"] = {
            field: translate(request, text) if not isinstance(text, (int, float)) else text
            for field, text in details.items()
        }
    response = Response(
        body=json.dumps(body, ensure_ascii=False).encode("utf-8"),
        status=status,
        content_type="application/json",
        charset="utf-8",
    )
    response.headers.update(headers or {})
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
    return envelope_response(request, 405, "method_not_allowed", Msg("method_not_allowed"))


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


def redis_unavailable_view(exc, request):
    # Redis holds revoked tokens, queues and streams: without it the request cannot be
    # served safely, but the client should retry rather than report a bug.
    log.error("Redis unavailable on %s %s: %s", request.method, request.path, exc)
    return envelope_response(request, 503, "service_unavailable", Msg("service_unavailable"),
                             headers={"Retry-After": "5"})


def internal_error_view(exc, request):
    log.error("unhandled error on %s %s", request.method, request.path, exc_info=exc)
    return envelope_response(request, 500, "internal_error", Msg("internal_error"))


def includeme(config):
    config.add_exception_view(app_error_view, context=AppError)
    config.add_forbidden_view(forbidden_view)
    config.add_exception_view(method_not_allowed_view, context=PredicateMismatch)
    config.add_notfound_view(not_found_view)
    config.add_exception_view(http_exception_view, context=HTTPException)
    config.add_exception_view(redis_unavailable_view, context=redis.RedisError)
    config.add_exception_view(internal_error_view, context=Exception)
