"""The reply job: one assistant answer, streamed from the model, stored once.

Runs in a worker greenlet (or in the embedded server), with its own short transactions:
claim the reply, read the history, stream from the model (no transaction held), then
write the outcome naming this attempt. Retryable model failures before the first token
are retried with backoff; once text has reached clients, a failure ends the reply in
`error` (retrying would show them a second, different beginning).
"""

import logging
import random
import time

import gevent
from rq.exceptions import ShutDownImminentException

from aisystant_server import events, present, streams
from aisystant_server.i18n import Msg
from aisystant_server.jobs.context import current
from aisystant_server.jobs.queues import enqueue_title
from aisystant_server.jobs.runtime import LeaseLost, ReplyCancelled, runtime
from aisystant_server.llm import ModelError
from aisystant_server.llm.prompt import SYSTEM_PROMPT, build_messages
from aisystant_server.models import Message, MessageStatus
from aisystant_server.services import messages

log = logging.getLogger(__name__)
ASSISTANT = "AiSystant"
MAX_BACKOFF_SECONDS = 30.0
# Attempts lost with their worker, before a reply is given up as failed (never a loop).
MAX_ATTEMPTS = 5


def generate_reply(reply_id):
    context = current()
    keeper = runtime(context)
    token = keeper.acquire(reply_id)
    if token is None:
        return "another attempt is running"
    try:
        return _produce(context, reply_id)
    finally:
        keeper.release(reply_id, token)


def _produce(context, reply_id):
    with context.session_factory() as session, session.begin():
        claimed = messages.claim(session, reply_id)
        if claimed is None:
            return "already finished"
        history, question = messages.prompt_inputs(session, claimed.conversation_id, claimed.reply_to_id)
    attempt, conversation_id, meta = claimed.attempt, claimed.conversation_id, dict(claimed.meta or {})
    settings, redis = context.settings, context.redis
    language = meta.get("language", "fr")
    typing = {"conversation_id": conversation_id, "username": ASSISTANT}
    started = time.monotonic()
    writer = None
    try:
        writer = streams.ReplyWriter(redis, reply_id, conversation_id)
        events.emit(redis, "typing", typing, conversation_id)
        if attempt > MAX_ATTEMPTS:
            raise ModelError("too_many_attempts", f"{attempt - 1} attempts were lost or failed")
        if context.provider is None:
            raise ModelError("not_configured", "no model is configured")
        completion = _stream_with_retries(context, writer, build_messages(
            history, question, settings["aisystant.history_token_budget"]))
        writer.flush()
    except ReplyCancelled:
        # The cancel endpoint stored the reply as cancelled and ended its stream; if this
        # attempt's start reset the stream after that, end it again for its readers.
        with context.session_factory() as session:
            reply = session.get(Message, reply_id)
            if reply is not None:
                streams.finish(redis, reply_id, "done", present.message(reply))
        return "cancelled"
    except (ShutDownImminentException, LeaseLost):
        # The worker is stopping, or another attempt may own the reply now: leave the
        # row to whoever holds (or, via the reaper, next takes) the lease.
        raise
    except Exception as error:  # noqa: BLE001 - any failure must end the reply, not loop it
        if not isinstance(error, ModelError):
            log.exception("reply %s failed", reply_id)
        if writer is not None:
            writer.flush()
        human = Msg("llm_failed").render(language)
        meta.update(error={"code": "llm_failed", "message": human, "detail": str(error)[:500]},
                    duration_ms=_ms(started))
        return _end(context, reply_id, attempt, MessageStatus.ERROR, writer.text if writer else "", meta,
                    error={"code": "llm_failed", "message": human})
    finally:
        events.emit(redis, "stop_typing", typing, conversation_id)
    meta.update(model=completion.model, stop_reason=completion.stop_reason,
                usage={"input_tokens": completion.input_tokens, "output_tokens": completion.output_tokens},
                ttft_ms=_ms(started, writer.first_text_at) if writer.first_text_at else None,
                duration_ms=_ms(started))
    return _end(context, reply_id, attempt, MessageStatus.COMPLETE, writer.text or completion.text, meta)


def _stream_with_retries(context, writer, prompt_messages):
    settings = context.settings
    retries = 0
    while True:
        try:
            return context.provider.stream(system=SYSTEM_PROMPT, messages=prompt_messages,
                                           max_tokens=settings["aisystant.max_output_tokens"],
                                           on_text=writer.write)
        except ModelError as error:
            if not error.retryable or writer.started or retries >= settings["llm.max_retries"]:
                raise
            delay = error.retry_after
            if delay is None:
                delay = settings["llm.retry_base_seconds"] * 2 ** retries * random.uniform(1.0, 1.25)
            log.info("model call failed (%s); retry %d in %.2f s", error, retries + 1, delay)
            gevent.sleep(min(delay, MAX_BACKOFF_SECONDS))
            retries += 1


def _end(context, reply_id, attempt, status, content, meta, error=None):
    """Store the outcome if this attempt still owns the reply, then tell the clients."""
    redis = context.redis
    with context.session_factory() as session, session.begin():
        if not messages.finish(session, reply_id, attempt, status, content, meta):
            return "superseded"
        reply = session.get(Message, reply_id)
        body = present.message(reply)
        first = status == MessageStatus.COMPLETE and messages.is_first_exchange(session, reply)
    if error:
        streams.finish(redis, reply_id, "error", error)
        events.emit(redis, "message_error", {"conversation_id": body["conversation_id"], "message_id": reply_id,
                                             **error}, body["conversation_id"])
    else:
        streams.finish(redis, reply_id, "done", body)
    events.emit(redis, "message_received", body, body["conversation_id"])
    if first:
        enqueue_title(redis, reply_id)
    return status


def _ms(start, end=None):
    return int(((end or time.monotonic()) - start) * 1000)
