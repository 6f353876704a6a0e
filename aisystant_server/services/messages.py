"""Messages and the life of an assistant reply, guarded by the database.

A reply is one row, created `pending` with the user message it answers (`reply_to_id`,
unique: never two replies to one message). Each attempt at producing it claims the row
by incrementing `attempt`; every later write names that attempt and the status it
expects, so an attempt that was superseded (its worker thought dead) or a reply
cancelled meanwhile changes nothing. Jobs call these with their own short sessions.
"""

import sqlalchemy as sa
from sqlalchemy.orm import aliased

from aisystant_server.db import utcnow
from aisystant_server.errors import PayloadTooLarge
from aisystant_server.i18n import Msg
from aisystant_server.llm.prompt import marked
from aisystant_server.models import Conversation, Message, MessageRole, MessageStatus

# Answers the model sees again: complete ones, and partial ones (marked).
ANSWERED = (MessageStatus.COMPLETE, MessageStatus.CANCELLED, MessageStatus.ERROR)


def store_user_message(db, conversation, user, content):
    message = Message(conversation_id=conversation.id, user_id=user.id, role=MessageRole.USER, content=content,
                      status=MessageStatus.COMPLETE)
    db.add(message)
    _touch(db, conversation.id)
    db.flush()
    return message


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
    question = store_user_message(db, conversation, user, content)
    reply = Message(conversation_id=conversation.id, user_id=None, role=MessageRole.ASSISTANT, content="",
                    status=MessageStatus.PENDING, reply_to_id=question.id, meta={"language": language})
    db.add(reply)
    db.flush()
    return question, reply


def _touch(db, conversation_id):
    db.execute(sa.update(Conversation).where(Conversation.id == conversation_id).values(updated_at=utcnow()))


def claim(session, reply_id):
    """Start a new attempt on a reply still in flight, or None if it has ended.

    One statement (the time to first token waits on it): the row with its new
    `attempt`, `conversation_id`, `reply_to_id`, `meta` and `created_at`.
    """
    return session.execute(
        sa.update(Message)
        .where(Message.id == reply_id, Message.status.in_(MessageStatus.in_flight()))
        .values(status=MessageStatus.STREAMING, attempt=Message.attempt + 1, updated_at=utcnow())
        .returning(Message.attempt, Message.conversation_id, Message.reply_to_id, Message.meta, Message.created_at)
    ).first()


def prompt_inputs(session, conversation_id, question_id):
    """(earlier turns as (role, text), the question) for a reply, in one query.

    What the history keeps: every answer with text, a partial one (cancelled, or cut by
    an error) marked as such, and the questions they answer (and those of the original
    product, which linked no reply). A question whose answer ended with no text at all
    (cancelled or failed before a word), or is still being written, is left out: kept, it
    would merge into the new question as if the user had asked both at once.
    """
    reply = aliased(Message)
    answered = sa.and_(reply.status.in_(ANSWERED), reply.content != "")
    rows = session.execute(
        sa.select(Message.id, Message.role, Message.content, Message.status)
        .outerjoin(reply, reply.reply_to_id == Message.id)
        .where(Message.conversation_id == conversation_id, Message.id <= question_id,
               sa.or_(Message.id == question_id,
                      sa.and_(Message.role == MessageRole.USER, Message.content != "",
                              sa.or_(reply.id.is_(None), answered)),
                      sa.and_(Message.role == MessageRole.ASSISTANT, Message.content != "",
                              Message.status.in_(ANSWERED))))
        .order_by(Message.id.desc())
        .limit(401)
    ).all()
    question = rows[0].content
    return [(role, marked(content, status)) for _, role, content, status in reversed(rows[1:])], question


def finish(session, reply_id, attempt, status, content, meta):
    """Write the outcome of `attempt`; False if the reply is no longer this attempt's."""
    result = session.execute(
        sa.update(Message)
        .where(Message.id == reply_id, Message.attempt == attempt, Message.status == MessageStatus.STREAMING)
        .values(status=status, content=content, meta=meta, updated_at=utcnow())
    )
    if result.rowcount != 1:
        return False
    conversation_id = session.scalar(sa.select(Message.conversation_id).where(Message.id == reply_id))
    _touch(session, conversation_id)
    return True


def cancel(db, reply, partial_content):
    """Stop a reply in flight, keeping what was written; False if it had already ended."""
    result = db.execute(
        sa.update(Message)
        .where(Message.id == reply.id, Message.status.in_(MessageStatus.in_flight()))
        .values(status=MessageStatus.CANCELLED, content=partial_content,
                meta={**(reply.meta or {}), "cancelled": True}, updated_at=utcnow())
    )
    return result.rowcount == 1


def is_first_exchange(session, reply):
    """True when this reply is the conversation's first complete one."""
    earlier = session.scalar(
        sa.select(sa.func.count(Message.id)).where(
            Message.conversation_id == reply.conversation_id, Message.role == MessageRole.ASSISTANT,
            Message.status == MessageStatus.COMPLETE, Message.id != reply.id)
    )
    return earlier == 0


def lost_replies(session, stale_before):
    """Replies in flight not touched since `stale_before`: candidates for the reaper."""
    return list(session.scalars(
        sa.select(Message.id).where(Message.role == MessageRole.ASSISTANT,
                                    Message.status.in_(MessageStatus.in_flight()),
                                    Message.updated_at < stale_before)
        .order_by(Message.id).limit(500)
    ))
