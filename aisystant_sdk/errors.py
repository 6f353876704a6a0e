"""One exception family for everything the client can meet.

The server answers every failure with the same envelope (``success: false``, a stable
English ``code``, a human ``message`` in the requested language, optional ``details``),
and the SSE stream ends a failed reply with an ``error`` event carrying the same ``code``
and ``message``. Both are turned into an exception here, in one place, so that a caller
catches by meaning (:class:`AuthError`, :class:`NotFoundError`, ...) and never parses a
body. Failures that never reached the server (refused connection, DNS, timeout) are
:class:`UnreachableError`; an answer that is not the envelope (a proxy's HTML page, the
wrong port) is :class:`ProtocolError`.
"""

from __future__ import annotations

import email.utils
import time
from typing import Any, Mapping


class AisystantError(Exception):
    """Base of every error raised by :class:`aisystant_sdk.Client`.

    ``status`` is the HTTP status (``None`` when no answer came back), ``code`` the
    server's stable snake_case code (or a client-side one such as ``unreachable``),
    ``message`` a human sentence and ``details`` the per-field messages of a validation
    error.
    """

    default_code = "error"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code or self.default_code
        self.details = dict(details or {})

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status!r}, code={self.code!r}, message={self.message!r})"


class AuthError(AisystantError):
    """No token, or a token that is malformed, expired or revoked (401)."""

    default_code = "unauthorized"


class InvalidCredentialsError(AuthError):
    """Wrong email or password at login (401 ``invalid_credentials``)."""

    default_code = "invalid_credentials"


class ForbiddenError(AisystantError):
    """The token is valid but not allowed to do this (403)."""

    default_code = "forbidden"


class NotFoundError(AisystantError):
    """The resource does not exist or belongs to someone else (404)."""

    default_code = "not_found"


class ValidationError(AisystantError):
    """The server refused the input (400); ``details`` maps fields to messages."""

    default_code = "validation_failed"


class ConflictError(AisystantError):
    """Duplicate account, or a reply that already finished (409)."""

    default_code = "conflict"


class PayloadTooLargeError(AisystantError):
    """The message or the request body is over the server's size cap (413)."""

    default_code = "payload_too_large"


class RateLimitedError(AisystantError):
    """Too many requests (429); ``retry_after`` is the wait in seconds, when known."""

    default_code = "rate_limited"

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class ModelNotConfiguredError(AisystantError):
    """The server has no model configured (503 ``llm_not_configured``)."""

    default_code = "llm_not_configured"


class ModelFailedError(AisystantError):
    """The model failed for good after the server's retries (502 ``llm_failed``)."""

    default_code = "llm_failed"


class ServerError(AisystantError):
    """The server failed (500) or is missing a dependency (503 ``service_unavailable``)."""

    default_code = "internal_error"


class UnreachableError(AisystantError):
    """No answer: connection refused, unknown host, TLS failure or timeout."""

    default_code = "unreachable"


class ProtocolError(AisystantError):
    """An answer that is not AiSystant's JSON envelope or SSE stream (wrong URL?)."""

    default_code = "protocol_error"


_BY_CODE: dict[str, type[AisystantError]] = {
    "unauthorized": AuthError,
    "invalid_credentials": InvalidCredentialsError,
    "forbidden": ForbiddenError,
    "not_found": NotFoundError,
    "validation_failed": ValidationError,
    "conflict": ConflictError,
    "payload_too_large": PayloadTooLargeError,
    "rate_limited": RateLimitedError,
    "llm_not_configured": ModelNotConfiguredError,
    "llm_failed": ModelFailedError,
    "llm_unavailable": ModelFailedError,
    "internal_error": ServerError,
    "service_unavailable": ServerError,
}

_BY_STATUS: dict[int, type[AisystantError]] = {
    400: ValidationError,
    401: AuthError,
    403: ForbiddenError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    429: RateLimitedError,
    500: ServerError,
    502: ModelFailedError,
    503: ServerError,
}


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def error_from_code(
    code: str | None,
    message: str | None,
    *,
    status: int | None = None,
    details: Mapping[str, Any] | None = None,
    retry_after: float | None = None,
) -> AisystantError:
    """Build the exception that matches a server ``code`` (falling back on ``status``)."""
    cls = _BY_CODE.get(code or "") or _BY_STATUS.get(status or 0) or AisystantError
    text = message or (f"the server answered {status}" if status else "the server reported an error")
    kwargs: dict[str, Any] = {"status": status, "code": code or cls.default_code, "details": details}
    if cls is RateLimitedError:
        kwargs["retry_after"] = retry_after
    return cls(text, **kwargs)
