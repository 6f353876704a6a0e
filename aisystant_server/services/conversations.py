"""Conversations and their messages, always scoped to their owner."""

import base64
import binascii
import json
from datetime import datetime, timedelta, timezone

import sqlalchemy as sa

from aisystant_server import streams
from aisystant_server.db import utcnow
from aisystant_server.errors import ValidationFailed
from aisystant_server.i18n import Msg
from aisystant_server.models import Conversation, Message, MessageRole, MessageStatus
from aisystant_server.schemas.conversations import DEFAULT_TITLE

MAX_ID = 2**31 - 1

def get_for_user(db, user_id, conversation_id):
    return db.scalars(
        sa.select(Conversation).where(Conversation.id == conversation_id, Conversation.user_id == user_id)
    ).first()


def get_message(db, conversation_id, message_id):
    return db.scalars(
        sa.select(Message).where(Message.id == message_id, Message.conversation_id == conversation_id)
    ).first()


def create(db, user, title):
    conversation = Conversation(user_id=user.id, title=title)
    db.add(conversation)
    db.flush()
    return conversation


def rename(db, conversation, title):
    conversation.title = title
    conversation.updated_at = utcnow()
    db.flush()
    return conversation


def set_generated_title(db, reply_id, title):
    """Name the conversation that `reply_id` answered in, if both are still there and the
    conversation still has the default title (a title a user chose is never replaced).
    The conversation, or None when nothing was written."""
    answered = sa.select(Message.id).where(
        Message.id == reply_id, Message.conversation_id == Conversation.id,
        Message.status == MessageStatus.COMPLETE).exists()
    conversation_id = db.scalar(
        sa.update(Conversation).where(Conversation.title == DEFAULT_TITLE, answered)
        .values(title=title, updated_at=utcnow()).returning(Conversation.id))
    return None if conversation_id is None else db.get(Conversation, conversation_id)


def replies(db, conversation_id, reply_ids):
    """The conversation's assistant messages among `reply_ids`."""
    return list(db.scalars(sa.select(Message).where(
        Message.conversation_id == conversation_id, Message.id.in_(reply_ids),
        Message.role == MessageRole.ASSISTANT)))


def reply_streams(db, conversation_id):
    """(replies in flight, replies that may still have a stream in Redis) of a conversation,
    as `ReplyRef`s: what deleting it must stop and clean up."""
    cutoff = utcnow() - timedelta(seconds=streams.KEEP_SECONDS)
    rows = db.execute(sa.select(Message.id, Message.conversation_id, Message.created_at, Message.status).where(
        Message.conversation_id == conversation_id, Message.role == MessageRole.ASSISTANT,
        Message.updated_at >= cutoff)).all()
    in_flight = [streams.ReplyRef(*row[:3]) for row in rows if row.status in MessageStatus.in_flight()]
    ended = [streams.ReplyRef(*row[:3]) for row in rows if row.status not in MessageStatus.in_flight()]
    return in_flight, ended


def delete(db, conversation):
    # Messages go by ON DELETE CASCADE, in the same statement.
    db.execute(sa.delete(Conversation).where(Conversation.id == conversation.id))


def list_for_user(db, user_id, limit, cursor=None):
    """A page of (conversation, message_count, last_message_at), most recently active first."""
    message_count = (
        sa.select(sa.func.count(Message.id)).where(Message.conversation_id == Conversation.id).scalar_subquery()
    )
    last_message_at = (
        sa.select(sa.func.max(Message.created_at)).where(Message.conversation_id == Conversation.id).scalar_subquery()
    )
    query = (
        sa.select(Conversation, message_count, last_message_at)
        .where(Conversation.user_id == user_id)
        .order_by(Conversation.updated_at.desc(), Conversation.id.desc())
        .limit(limit + 1)
    )
    if cursor:
        updated_at, conversation_id = decode_cursor(cursor)
        query = query.where(sa.or_(
            Conversation.updated_at < updated_at,
            sa.and_(Conversation.updated_at == updated_at, Conversation.id < conversation_id),
        ))
    rows = db.execute(query).all()
    next_cursor = encode_cursor(rows[limit - 1][0]) if len(rows) > limit else None
    return [(row[0], int(row[1] or 0), row[2]) for row in rows[:limit]], next_cursor


def encode_cursor(conversation):
    raw = json.dumps([conversation.updated_at.isoformat(), conversation.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor):
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        updated_at, conversation_id = json.loads(raw)
        moment = datetime.fromisoformat(updated_at)
        if (moment.tzinfo is None or not 1970 <= moment.year <= 9999 or type(conversation_id) is not int
                or not 0 < conversation_id <= MAX_ID):
            raise ValueError(cursor)
        return moment.astimezone(timezone.utc), conversation_id
    except (ValueError, TypeError, OverflowError, RecursionError, binascii.Error, UnicodeDecodeError):
        raise ValidationFailed(details={"cursor": Msg("field_cursor")}) from None


def messages_page(db, conversation_id, limit, before=None):
    """The newest `limit` messages (before the id `before`), in ascending order, and the
    id to pass as `before` for the previous page (None on the first message)."""
    query = sa.select(Message).where(Message.conversation_id == conversation_id)
    if before is not None:
        query = query.where(Message.id < before)
    rows = list(db.scalars(query.order_by(Message.id.desc()).limit(limit + 1)))
    next_before = rows[limit - 1].id if len(rows) > limit else None
    return list(reversed(rows[:limit])), next_before
