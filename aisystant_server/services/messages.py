"""Messages and the life of an assistant reply, guarded by the database.

A reply is one row, created `pending` with the user message it answers (`reply_to_id`,
unique: never two replies to one message). Each attempt at producing it claims the row
by incrementing `attempt`; every later write names that attempt and the status it
expects, so an attempt that was superseded (its worker thought dead) or a reply
cancelled meanwhile changes nothing. Jobs call these with their own short sessions.
The statements are built once, with bound parameters (see services/conversations.py).
"""

import sqlalchemy as sa
from sqlalchemy.orm import aliased

from aisystant_server.db import record, records, utcnow
from aisystant_server.errors import PayloadTooLarge
from aisystant_server.i18n import Msg
from aisystant_server.llm.prompt import marked
from aisystant_server.models import Conversation, Message, MessageRole, MessageStatus
from aisystant_server.services.conversations import MESSAGE, newest_first

# Answers the model sees again: complete ones, and partial ones (marked).
ANSWERED = (MessageStatus.COMPLETE, MessageStatus.CANCELLED, MessageStatus.ERROR)


_INSERT = sa.insert(Message).returning(*MESSAGE)
# A message added: the conversation's activity, count and last message, in one statement.
_ADDED = (sa.update(Conversation).where(Conversation.id == sa.bindparam("p_id"))
          .values(updated_at=sa.bindparam("p_now"), last_message_at=sa.bindparam("p_now"),
                  message_count=Conversation.message_count + sa.bindparam("p_added")))
_ACTIVE = (sa.update(Conversation).where(Conversation.id == sa.bindparam("p_id"))
           .values(updated_at=sa.bindparam("p_now")).returning(Conversation.title))
_CLAIM = (sa.update(Message)
          .where(Message.id == sa.bindparam("p_id"), Message.status.in_(MessageStatus.in_flight()))
          .values(status=MessageStatus.STREAMING, attempt=Message.attempt + 1, updated_at=sa.bindparam("p_now"))
          .returning(Message.attempt, Message.conversation_id, Message.reply_to_id, Message.meta.label("meta"),
                     Message.created_at))
# The newest messages up to the question (read by index, whatever the conversation's
# length), then those the model sees again.
PROMPT_MESSAGES = 401
_UP_TO_QUESTION, _NEWEST_FIRST = newest_first(sa.bindparam("p_question_id"), inclusive=True)
_recent = (sa.select(Message.id, Message.role, Message.content, Message.status).where(_UP_TO_QUESTION)
           .order_by(*_NEWEST_FIRST).limit(PROMPT_MESSAGES).subquery())
_reply = aliased(Message)
_PROMPT = (
    sa.select(_recent.c.role, _recent.c.content, _recent.c.status)
    .outerjoin(_reply, _reply.reply_to_id == _recent.c.id)
    .where(sa.or_(_recent.c.id == sa.bindparam("p_question_id"),
                  sa.and_(_recent.c.role == MessageRole.USER, _recent.c.content != "",
                          sa.or_(_reply.id.is_(None),
                                 sa.and_(_reply.status.in_(ANSWERED), _reply.content != ""))),
                  sa.and_(_recent.c.role == MessageRole.ASSISTANT, _recent.c.content != "",
                          _recent.c.status.in_(ANSWERED))))
    .order_by(_recent.c.id.desc())
)
_FINISH = (sa.update(Message)
           .where(Message.id == sa.bindparam("p_id"), Message.attempt == sa.bindparam("p_attempt"),
                  Message.status == MessageStatus.STREAMING)
           .values(status=sa.bindparam("p_status"), content=sa.bindparam("p_content"),
                   meta=sa.bindparam("p_meta", type_=Message.meta.type), updated_at=sa.bindparam("p_now"))
           .returning(*MESSAGE))
_CANCEL = (sa.update(Message)
           .where(Message.id == sa.bindparam("p_id"), Message.status.in_(MessageStatus.in_flight()))
           .values(status=MessageStatus.CANCELLED, content=sa.bindparam("p_content"),
                   meta=sa.bindparam("p_meta", type_=Message.meta.type), updated_at=sa.bindparam("p_now"))
           .returning(*MESSAGE))
# The outcome `_FINISH` wrote, read back when writing it again finds nothing to update.
_FINISHED = sa.select(*MESSAGE).where(Message.id == sa.bindparam("p_id"), Message.attempt == sa.bindparam("p_attempt"),
                                      Message.status == sa.bindparam("p_status"))


def store_user_message(db, conversation, user, content):
    now = utcnow()
    question = _insert(db, conversation.id, user.id, MessageRole.USER, content, MessageStatus.COMPLETE, None, now)
    records(db, _ADDED, {"p_id": conversation.id, "p_now": now, "p_added": 1})
    return question


def send(db, conversation, user, content, settings, language):
    """Store a question and, when a model is configured, its `pending` reply: (question,
    reply or None), in the caller's transaction. Over the size cap, nothing is stored."""
    cap = settings["aisystant.max_message_chars"]
    if len(content) > cap:
        raise PayloadTooLarge(Msg("message_too_long", max=cap))
    if not settings["anthropic.api_key"]:
        return store_user_message(db, conversation, user, content), None
    return create_exchange(db, conversation, user, content, language)


def create_exchange(db, conversation, user, content, language):
    """The user message and its `pending` reply, in the caller's transaction."""
    now = utcnow()
    question = _insert(db, conversation.id, user.id, MessageRole.USER, content, MessageStatus.COMPLETE, None, now)
    reply = _insert(db, conversation.id, None, MessageRole.ASSISTANT, "", MessageStatus.PENDING,
                    {"language": language}, now, reply_to_id=question.id)
    records(db, _ADDED, {"p_id": conversation.id, "p_now": now, "p_added": 2})
    return question, reply


def _insert(db, conversation_id, user_id, role, content, status, meta, now, reply_to_id=None):
    return record(db, _INSERT, {
        "conversation_id": conversation_id, "user_id": user_id, "role": role, "content": content,
        "status": status, "metadata": meta, "reply_to_id": reply_to_id, "attempt": 0,
        "created_at": now, "updated_at": now})


def claim(session, reply_id):
    """Start a new attempt on a reply still in flight, or None if it has ended.

    One statement (the time to first token waits on it): the row with its new
    `attempt`, `conversation_id`, `reply_to_id`, `meta` and `created_at`.
    """
    return record(session, _CLAIM, {"p_id": reply_id, "p_now": utcnow()})


def prompt_inputs(session, conversation_id, question_id):
    """(earlier turns as (role, text), the question) for a reply, in one query; None if
    the question is gone (its conversation was deleted).

    What the history keeps: every answer with text, a partial one (cancelled, or cut by
    an error) marked as such, and the questions they answer (and those of the original
    product, which linked no reply). A question whose answer ended with no text at all
    (cancelled or failed before a word), or is still being written, is left out: kept, it
    would merge into the new question as if the user had asked both at once.
    """
    rows = records(session, _PROMPT, {"p_conversation_id": conversation_id, "p_question_id": question_id})
    if not rows:
        return None
    question = rows[0].content
    return [(role, marked(content, status)) for role, content, status in reversed(rows[1:])], question


def finish(session, reply_id, attempt, status, content, meta):
    """Write the outcome of `attempt`: the reply as stored, or None if the reply is no
    longer this attempt's.

    Safe to call again: a connection that broke after the write landed loses only its
    answer, and the call tried again finds the outcome it wrote (thinking itself
    superseded, the attempt would never tell the reply's readers that it ended)."""
    params = {"p_id": reply_id, "p_attempt": attempt, "p_status": status}
    reply = record(session, _FINISH, {**params, "p_content": content, "p_meta": meta, "p_now": utcnow()})
    if reply is None:
        reply = record(session, _FINISHED, params)
    return reply


def mark_active(session, conversation_id):
    """The conversation had news (a reply ended): it moves up its owner's list. Its title,
    or None if it is gone."""
    active = record(session, _ACTIVE, {"p_id": conversation_id, "p_now": utcnow()})
    return None if active is None else active.title


def cancel(db, reply, partial_content):
    """Stop a reply in flight, keeping what was written: the reply as stored, or None if it
    had already ended."""
    return record(db, _CANCEL, {"p_id": reply.id, "p_content": partial_content,
                                "p_meta": {**(reply.meta or {}), "cancelled": True}, "p_now": utcnow()})


def lost_replies(session, stale_before, after_id, limit):
    """Replies in flight not touched since `stale_before`, by id after `after_id`:
    candidates for the reaper, a page at a time."""
    return list(session.scalars(
        sa.select(Message.id).where(Message.role == MessageRole.ASSISTANT,
                                    Message.status.in_(MessageStatus.in_flight()),
                                    Message.updated_at < stale_before, Message.id > after_id)
        .order_by(Message.id).limit(limit)
    ))
