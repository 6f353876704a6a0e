"""Users, conversations and messages, with the original product's table and column names.

A database made by the original (Node) product is upgraded in place by the migrations,
so the names here are the contract: `users.password` holds the hash, `messages.metadata`
the reply's model, usage and timings.
"""

import enum

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Mapped, mapped_column, relationship

from aisystant_server.db import Base, UTCDateTime, utcnow

JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


class Role(enum.StrEnum):
    USER = "user"
    ADMIN = "admin"


class MessageRole(enum.StrEnum):
    USER = "user"
    ASSISTANT = "assistant"
    SYSTEM = "system"


class MessageStatus(enum.StrEnum):
    PENDING = "pending"
    STREAMING = "streaming"
    COMPLETE = "complete"
    ERROR = "error"
    CANCELLED = "cancelled"

    @classmethod
    def in_flight(cls):
        return (cls.PENDING, cls.STREAMING)


def _check_in(column, enum_cls):
    values = ", ".join(f"'{member.value}'" for member in enum_cls)
    return f"{column} IN ({values})"


# SQLite hands out max(rowid) + 1 unless a table is AUTOINCREMENT: deleting the newest
# rows would free their ids for someone else's, while Redis streams, queued jobs and
# leases still know them by those ids. PostgreSQL's sequences never go back.
NEVER_REUSE_IDS = {"sqlite_autoincrement": True}
# Ids are PostgreSQL integers: a larger one cannot exist, and asked for, it is a 404 or a
# validation error rather than a database error.
MAX_ID = 2**31 - 1


class User(Base):
    __tablename__ = "users"
    __table_args__ = NEVER_REUSE_IDS

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(sa.String(50), unique=True)
    email: Mapped[str] = mapped_column(sa.String(100), unique=True)
    password: Mapped[str] = mapped_column(sa.String(255))
    avatar_url: Mapped[str | None] = mapped_column(sa.String(255))
    role: Mapped[str] = mapped_column(sa.String(20), default=Role.USER, server_default="user")
    created_at = mapped_column(UTCDateTime, default=utcnow, server_default=sa.func.now())
    updated_at = mapped_column(UTCDateTime, default=utcnow, server_default=sa.func.now(), onupdate=utcnow)


class Conversation(Base):
    __tablename__ = "conversations"
    __table_args__ = (sa.Index("ix_conversations_user_activity", "user_id", "updated_at", "id"), NEVER_REUSE_IDS)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"), index=True)
    title: Mapped[str | None] = mapped_column(sa.String(255))
    created_at = mapped_column(UTCDateTime, default=utcnow, server_default=sa.func.now())
    # Bumped by every new message, a rename and the generated title: the list is ordered by it.
    updated_at = mapped_column(UTCDateTime, default=utcnow, server_default=sa.func.now())
    # Kept with each message, so listing conversations never counts their messages.
    message_count: Mapped[int] = mapped_column(default=0, server_default="0")
    last_message_at = mapped_column(UTCDateTime)

    user = relationship(User, lazy="raise")


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (
        sa.CheckConstraint(_check_in("role", MessageRole), name="role"),
        sa.CheckConstraint(_check_in("status", MessageStatus), name="status"),
        sa.Index("ix_messages_conversation_id_id", "conversation_id", "id"),
        NEVER_REUSE_IDS,
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # Nullable as in the original schema, whose rows the upgrade keeps as they are.
    conversation_id: Mapped[int | None] = mapped_column(sa.ForeignKey("conversations.id", ondelete="CASCADE"))
    user_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id", ondelete="SET NULL"))
    content: Mapped[str] = mapped_column(sa.Text)
    role: Mapped[str] = mapped_column(sa.String(20))
    status: Mapped[str] = mapped_column(sa.String(20), default=MessageStatus.COMPLETE, server_default="complete")
    # `metadata` is reserved by SQLAlchemy's declarative classes; the column keeps its name.
    meta = mapped_column("metadata", JSONType)
    # The user message an assistant reply answers. Unique: a user message gets at most one
    # reply row, whatever retries, lost workers or races happen.
    reply_to_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("messages.id", ondelete="CASCADE"), unique=True
    )
    created_at = mapped_column(UTCDateTime, default=utcnow, server_default=sa.func.now())
    updated_at = mapped_column(UTCDateTime, default=utcnow, server_default=sa.func.now(), onupdate=utcnow)
    # Incremented by each attempt that claims the reply; a write that names an older attempt
    # is refused, so a worker thought dead can never overwrite the reply of its successor.
    attempt: Mapped[int] = mapped_column(default=0, server_default="0")
