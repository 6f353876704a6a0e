"""After a conversation's first exchange, ask the model for a short title.

Best effort: any failure leaves the default title. The write names the reply it was
enqueued for: if that reply or its conversation is gone (deleted while the model
thought), or the user chose a title meanwhile, nothing is written.
"""

import logging

from aisystant_server import events, present
from aisystant_server.jobs.context import current
from aisystant_server.llm import ModelError
from aisystant_server.llm.prompt import TITLE_PROMPT, clean_title, title_messages
from aisystant_server.models import Message
from aisystant_server.services.conversations import set_generated_title

log = logging.getLogger(__name__)


def generate_title(reply_id):
    context = current()
    if context.provider is None:
        return None
    with context.session_factory() as session:
        reply = session.get(Message, reply_id)
        question = reply and session.get(Message, reply.reply_to_id)
        if question is None:
            return None
        conversation_id, prompt = reply.conversation_id, title_messages(question.content, reply.content)
    try:
        completion = context.provider.complete(system=TITLE_PROMPT, messages=prompt, max_tokens=30)
    except ModelError as error:
        log.warning("no title for conversation %s: %s", conversation_id, error)
        return None
    title = clean_title(completion.text)
    if not title:
        return None
    with context.session_factory() as session:
        conversation = set_generated_title(session, reply_id, title)
        body = conversation and present.conversation(conversation)
    if body:
        events.emit(context.events, "conversation_updated", body, conversation_id)
    return title
