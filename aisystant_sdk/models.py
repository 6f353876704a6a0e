"""Typed views of the server's JSON objects.

Each class is a frozen dataclass built by ``from_dict`` from one object of the contract.
Timestamps become aware ``datetime``s; a field the server leaves out becomes ``None``.
``raw`` keeps the object exactly as received, so ``to_dict()`` gives back what the server
said (for ``--json`` output and exports) and fields added later are not lost.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Mapping


def _datetime(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _int(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


class _Model:
    raw: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """The object as the server sent it."""
        return dict(self.raw)


@dataclass(frozen=True)
class User(_Model):
    """An account: ``GET /api/auth/me``, or the ``user`` of login and register."""

    id: int
    username: str
    email: str
    avatar_url: str | None = None
    role: str = "user"
    created_at: datetime | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "User":
        return cls(
            id=_int(data.get("id")) or 0,
            username=str(data.get("username") or ""),
            email=str(data.get("email") or ""),
            avatar_url=data.get("avatar_url"),
            role=str(data.get("role") or "user"),
            created_at=_datetime(data.get("created_at")),
            raw=dict(data),
        )


@dataclass(frozen=True)
class AuthResult:
    """What login and register return: the account and its bearer token."""

    user: User
    token: str


@dataclass(frozen=True)
class Conversation(_Model):
    """A conversation; ``message_count`` and ``last_message_at`` come with lists only."""

    id: int
    title: str
    user_id: int | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    message_count: int | None = None
    last_message_at: datetime | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Conversation":
        return cls(
            id=_int(data.get("id")) or 0,
            title=str(data.get("title") or ""),
            user_id=_int(data.get("user_id")),
            created_at=_datetime(data.get("created_at")),
            updated_at=_datetime(data.get("updated_at")),
            message_count=_int(data.get("message_count")),
            last_message_at=_datetime(data.get("last_message_at")),
            raw=dict(data),
        )


@dataclass(frozen=True)
class Message(_Model):
    """One message; ``status`` is pending, streaming, complete, error or cancelled."""

    id: int
    conversation_id: int
    role: str
    content: str
    status: str = "complete"
    user_id: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: datetime | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Message":
        return cls(
            id=_int(data.get("id")) or 0,
            conversation_id=_int(data.get("conversation_id")) or 0,
            role=str(data.get("role") or ""),
            content=str(data.get("content") or ""),
            status=str(data.get("status") or "complete"),
            user_id=_int(data.get("user_id")),
            metadata=dict(data.get("metadata") or {}),
            created_at=_datetime(data.get("created_at")),
            raw=dict(data),
        )

    @property
    def finished(self) -> bool:
        """True once the message will not change any more."""
        return self.status in ("complete", "error", "cancelled")


@dataclass(frozen=True)
class Exchange:
    """What sending returns: the stored user message and the assistant reply.

    After an asynchronous send (or a synchronous one whose wait ran long) the reply is
    still ``pending``: follow it with :meth:`Client.stream_reply`.
    """

    user_message: Message
    assistant_message: Message

    @property
    def pending(self) -> bool:
        return not self.assistant_message.finished


@dataclass(frozen=True)
class ConversationPage:
    """One page of ``GET /api/chat/conversations``; ``next_cursor`` is None at the end."""

    items: list[Conversation]
    next_cursor: str | None = None

    def __iter__(self):
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


@dataclass(frozen=True)
class ConversationDetail:
    """A conversation with (a page of) its messages, oldest first."""

    conversation: Conversation
    messages: list[Message]

    def to_dict(self) -> dict[str, Any]:
        return {
            "conversation": self.conversation.to_dict(),
            "messages": [m.to_dict() for m in self.messages],
        }
