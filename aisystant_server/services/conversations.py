"""Conversations and their messages, always scoped to their owner.

The statements of the request paths are built once, with bound parameters: building
SQLAlchemy expressions and ORM objects on every request was most of a read's CPU. They
return plain rows, which `present` turns into JSON.
"""

import base64
import binascii
import json
from datetime import datetime, timedelta, timezone

import sqlalchemy as sa

from aisystant_server import streams
from aisystant_server.db import api_timestamp, record, records, utcnow
from aisystant_server.errors import ValidationFailed
from aisystant_server.i18n import Msg
from aisystant_server.models import MAX_ID, Conversation, Message, MessageRole, MessageStatus
from aisystant_server.schemas.conversations import DEFAULT_TITLE

# What the API shows of a conversation and of a message.
CONVERSATION = (Conversation.id, Conversation.user_id, Conversation.title, Conversation.created_at,
                Conversation.updated_at)
MESSAGE = (Message.id, Message.conversation_id, Message.user_id, Message.role, Message.content, Message.status,
           Message.meta.label("meta"), Message.created_at)
# Pages of them, presented by `present.listed_conversation` and `present.listed_message`:
# timestamps as the text the API shows (`api_timestamp`), a message's metadata as the JSON
# text the database holds, embedded as it is (decoded into dicts only to be encoded again,
# it cost a page of 50 messages 110 us, a sixth of its statement), and the raw
# `updated_at` that a next page's cursor needs to the microsecond.
LISTED_CONVERSATION = (Conversation.id, Conversation.user_id, Conversation.title,
                       api_timestamp(Conversation.created_at).label("created_at"),
                       api_timestamp(Conversation.updated_at).label("updated_at"), Conversation.message_count,
                       api_timestamp(Conversation.last_message_at).label("last_message_at"),
                       Conversation.updated_at.label("cursor_updated_at"))
LISTED_MESSAGE = (*MESSAGE[:6], sa.cast(Message.meta, sa.Text).label("meta_json"),
                  api_timestamp(Message.created_at).label("created_at"))


def newest_first(upper, inclusive=False):
    """The messages of conversation `p_conversation_id` with ids below `upper` (or up to
    it), as bounds for the (conversation_id, id) index, and that index's order, newest
    first: (where clause, order by).

    Pairs, not `conversation_id = :c AND id < :upper`: given those, PostgreSQL may walk the
    primary key back from the newest message of all and filter out every message written
    anywhere since the conversation's newest one (2,010 rows read for 11 kept, measured
    with a big conversation gone quiet), a cost growing with everyone's history. Only the
    (conversation_id, id) index answers these bounds in this order."""
    pair, conversation = sa.tuple_(Message.conversation_id, Message.id), sa.bindparam("p_conversation_id")
    below = pair <= sa.tuple_(conversation, upper) if inclusive else pair < sa.tuple_(conversation, upper)
    return sa.and_(below, pair > sa.tuple_(conversation, 0)), (Message.conversation_id.desc(), Message.id.desc())


_OWN = sa.select(*CONVERSATION).where(Conversation.id == sa.bindparam("p_id"),
                                      Conversation.user_id == sa.bindparam("p_user_id"))
_MESSAGE = sa.select(*MESSAGE).where(Message.id == sa.bindparam("p_id"),
                                     Message.conversation_id == sa.bindparam("p_conversation_id"))
_CREATE = sa.insert(Conversation).returning(*CONVERSATION)
_RENAME = (sa.update(Conversation).where(Conversation.id == sa.bindparam("p_id"))
           .values(title=sa.bindparam("p_title"), updated_at=sa.bindparam("p_now")).returning(*CONVERSATION))
_LIST = (sa.select(*LISTED_CONVERSATION).where(Conversation.user_id == sa.bindparam("p_user_id"))
         .order_by(Conversation.updated_at.desc(), Conversation.id.desc()).limit(sa.bindparam("p_limit")))
# A pair, which the (user_id, updated_at, id) index answers (as `updated_at < :t OR
# (updated_at = :t AND id < :i)` it was a filter: a page of 10 after 200 conversations read
# 211 rows). Its bounds are typed by hand: a pair does not take its columns' types, and
# `UTCDateTime` must convert the date for SQLite, which stores naive text.
_LIST_AFTER = _LIST.where(
    sa.tuple_(Conversation.updated_at, Conversation.id)
    < sa.tuple_(sa.bindparam("p_updated_at", type_=Conversation.updated_at.type),
                sa.bindparam("p_after_id", type_=Conversation.id.type)))
# A bigint: the first page's bound, MAX_ID + 1, is beyond an integer (a prepared
# statement's parameter takes the type of the column it is compared with).
_IN_PAGE, _NEWEST_FIRST = newest_first(sa.cast(sa.bindparam("p_before"), sa.BigInteger))
_PAGE = sa.select(*LISTED_MESSAGE).where(_IN_PAGE).order_by(*_NEWEST_FIRST).limit(sa.bindparam("p_limit"))


def get_for_user(db, user_id, conversation_id):
    return record(db, _OWN, {"p_id": conversation_id, "p_user_id": user_id})


def get_message(db, conversation_id, message_id):
    return record(db, _MESSAGE, {"p_id": message_id, "p_conversation_id": conversation_id})


def create(db, user, title):
    now = utcnow()
    return record(db, _CREATE, {"user_id": user.id, "title": title, "created_at": now, "updated_at": now,
                                "message_count": 0})


def rename(db, conversation, title):
    """The conversation renamed, or None if it is gone."""
    return record(db, _RENAME, {"p_id": conversation.id, "p_title": title, "p_now": utcnow()})


def set_generated_title(db, reply_id, title):
    """Name the conversation that `reply_id` answered in, if both are still there and the
    conversation still has the default title (a title a user chose is never replaced).
    The conversation, or None when nothing was written."""
    answered = sa.select(Message.id).where(
        Message.id == reply_id, Message.conversation_id == Conversation.id,
        Message.status == MessageStatus.COMPLETE).exists()
    return db.execute(
        sa.update(Conversation).where(Conversation.title == DEFAULT_TITLE, answered)
        .values(title=title, updated_at=utcnow()).returning(*CONVERSATION)).first()


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
    """A page of conversations (with `message_count` and `last_message_at`), most
    recently active first, and the cursor of the next page (None on the last)."""
    params = {"p_user_id": user_id, "p_limit": limit + 1}
    if cursor:
        params["p_updated_at"], params["p_after_id"] = decode_cursor(cursor)
    rows = records(db, _LIST_AFTER if cursor else _LIST, params)
    next_cursor = encode_cursor(rows[limit - 1]) if len(rows) > limit else None
    return rows[:limit], next_cursor


def encode_cursor(conversation):
    raw = json.dumps([conversation.cursor_updated_at.isoformat(), conversation.id]).encode()
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
    rows = records(db, _PAGE, {"p_conversation_id": conversation_id, "p_limit": limit + 1,
                               "p_before": MAX_ID + 1 if before is None else before})
    next_before = rows[limit - 1].id if len(rows) > limit else None
    return list(reversed(rows[:limit])), next_before
