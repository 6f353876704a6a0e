"""AiSystant's client library and the ``aisystant`` command line.

The :class:`Client` is the product; the CLI (``aisystant_sdk.cli``) is a thin layer over
it. This package depends on requests, click and rich only, never on the server.
"""

__version__ = "0.1.0"

from .client import DEFAULT_URL, Client, ReplyStream  # noqa: E402
from .errors import (  # noqa: E402
    AisystantError,
    AuthError,
    ConflictError,
    ForbiddenError,
    InvalidCredentialsError,
    ModelFailedError,
    ModelNotConfiguredError,
    NotFoundError,
    PayloadTooLargeError,
    ProtocolError,
    RateLimitedError,
    ServerError,
    UnreachableError,
    ValidationError,
)
from .models import (  # noqa: E402
    AuthResult,
    Conversation,
    ConversationDetail,
    ConversationPage,
    Exchange,
    Message,
    User,
)

__all__ = [
    "DEFAULT_URL",
    "AisystantError",
    "AuthError",
    "AuthResult",
    "Client",
    "ConflictError",
    "Conversation",
    "ConversationDetail",
    "ConversationPage",
    "Exchange",
    "ForbiddenError",
    "InvalidCredentialsError",
    "Message",
    "ModelFailedError",
    "ModelNotConfiguredError",
    "NotFoundError",
    "PayloadTooLargeError",
    "ProtocolError",
    "RateLimitedError",
    "ReplyStream",
    "ServerError",
    "UnreachableError",
    "User",
    "ValidationError",
]
