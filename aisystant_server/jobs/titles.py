"""After a conversation's first exchange, ask the model for a short title.

Best effort: any failure leaves the default title, and a title the user set meanwhile
is never overwritten.
"""

import logging

import sqlalchemy as sa

from aisystant_server import events, present
from aisystant_server.db import utcnow
from aisystant_server.jobs.context import current
from aisystant_server.llm import ModelError
from aisystant_server.llm.prompt import TITLE_PROMPT, clean_title, title_messages
from aisystant_server.models import Conversation, Message
from aisystant_server.schemas.conversations import DEFAULT_TITLE

log = logging.getLogger(__name__)


def generate_title(reply_id):
    context = current()
    if context.provider is None:
        return None
    with context.session_factory() as session:
        reply = session.get(Message, reply_id)
        if reply is None:
            return None
        question = session.get(Message, reply.reply_to_id)
        conversation_id, prompt = reply.conversation_id, title_messages(question.content, reply.content)
    try:
        completion = context.provider.complete(system=TITLE_PROMPT, messages=prompt, max_tokens=30)
    except ModelError as error:
        log.warning("no title for conversation %s: %s", conversation_id, error)
        return None
    title = clean_title(completion.text)
    if not title:
        return None
    with context.session_factory() as session, session.begin():
        updated = session.execute(
            sa.update(Conversation)
            .where(Conversation.id == conversation_id, Conversation.title == DEFAULT_TITLE)
            .values(title=title, updated_at=utcnow())
        ).rowcount
        conversation = session.get(Conversation, conversation_id)
        body = present.conversation(conversation) if updated and conversation else None
    if body:
        events.emit(context.redis, "conversation_updated", body, conversation_id)
    return title
