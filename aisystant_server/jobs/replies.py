"""The reply job: one assistant answer, streamed from the model, stored once.

Runs in a worker greenlet (or in the embedded server), each statement on its own (see
jobs/context.py): claim the reply, read the history, stream from the model, then write
the outcome naming this attempt. Retryable model failures before the first token
are retried with backoff; once text has reached clients, a model failure ends the reply
in `error` (retrying would show them a second, different beginning).

A reply ends in `error` only when the model failed. When the infrastructure fails
instead, the reply is never given up: a Redis outage is ridden out by the stream writer
(the text is kept and written once Redis is back), the final database write is retried
while the database is away, and if this attempt must stop anyway (its worker stops, its
lease was taken over, Redis or the database stayed away too long) the row is left in
flight for the reaper, whose next attempt continues the text already streamed.
"""

import logging
import random
import time

import gevent
import redis as redis_lib
import sqlalchemy as sa
from rq.exceptions import ShutDownImminentException

from aisystant_server import events, logs, metrics, present, streams
from aisystant_server.i18n import Msg
from aisystant_server.jobs.context import current
from aisystant_server.jobs.queues import enqueue_title
from aisystant_server.jobs.runtime import LeaseLost, ReplyCancelled, runtime
from aisystant_server.llm import ModelError
from aisystant_server.llm.prompt import SYSTEM_PROMPT, build_messages
from aisystant_server.models import Message, MessageStatus
from aisystant_server.outages import database_unavailable, is_outage
from aisystant_server.schemas.conversations import DEFAULT_TITLE
from aisystant_server.services import messages

log = logging.getLogger(__name__)
ASSISTANT = "AiSystant"
MAX_BACKOFF_SECONDS = 30.0
# Attempts lost with their worker, before a reply is given up as failed (never a loop).
MAX_ATTEMPTS = 5
# How long the final write waits for an unreachable database before leaving the reply
# to the reaper (whose next attempt continues the text the reply's stream holds).
DATABASE_PATIENCE_SECONDS = 120


def generate_reply(reply_id):
    context = current()
    keeper = runtime(context)
    token = keeper.acquire(reply_id)
    if token is None:
        return "another attempt is running"
    try:
        with logs.fields(reply_id=reply_id):
            return _produce(context, reply_id)
    finally:
        keeper.release(reply_id, token)


def _produce(context, reply_id):
    with context.session_factory() as session:
        claimed = messages.claim(session, reply_id)
        if claimed is None:
            return "already finished"
        inputs = messages.prompt_inputs(session, claimed.conversation_id, claimed.reply_to_id)
    if inputs is None:
        # Deleted since the claim (not the same transaction): the delete told its readers.
        return "conversation deleted"
    reply = streams.ReplyRef(reply_id, claimed.conversation_id, claimed.created_at)
    typing = {"conversation_id": reply.conversation_id, "username": ASSISTANT}
    events.emit(context.events, "typing", typing, reply.conversation_id)
    try:
        outcome = _write(context, reply, claimed.attempt, dict(claimed.meta or {}), *inputs)
    finally:
        # Last, whatever happened: the sender waits for the reply's end, not for this.
        events.emit(context.events, "stop_typing", typing, reply.conversation_id)
    if outcome in (MessageStatus.COMPLETE, MessageStatus.ERROR):
        _mark_active(context, reply, outcome)
    return outcome


def _write(context, reply, attempt, meta, history, question):
    """Stream this attempt's reply from the model and store how it ended."""
    settings, redis = context.settings, context.redis
    language = meta.get("language", "fr")
    started = time.monotonic()
    writer = streams.ReplyWriter(redis, context.events, reply, attempt)
    try:
        if attempt > MAX_ATTEMPTS:
            raise ModelError("too_many_attempts", f"{attempt - 1} attempts were lost or failed")
        if context.provider is None:
            raise ModelError("not_configured", "no model is configured")
        prompt = build_messages(history, question, settings["aisystant.history_token_budget"])
        if writer.model_prefix:
            # An earlier attempt was lost mid-way: the model continues its text.
            prompt.append({"role": "assistant", "content": writer.model_prefix})
        completion = _stream_with_retries(context, writer, prompt)
    except ReplyCancelled:
        # The cancel endpoint stored the reply as cancelled and ended its stream; end it
        # again in case this attempt wrote after that.
        with context.session_factory() as session:
            row = session.get(Message, reply.id)
            if row is not None:
                streams.finish(redis, reply, "done", present.message(row))
        _report(context, reply, attempt, "cancelled", {**meta, "duration_ms": _ms(started)})
        return "cancelled"
    except (ShutDownImminentException, LeaseLost):
        # The worker is stopping, or another attempt may own the reply now: leave the
        # row to whoever holds (or, via the reaper, next takes) the lease.
        _report(context, reply, attempt, "interrupted", {**meta, "duration_ms": _ms(started)})
        raise
    except Exception as error:  # noqa: BLE001 - see _failure
        if is_outage(error):
            metrics.store_error(error)
            _report(context, reply, attempt, "interrupted", {**meta, "duration_ms": _ms(started)})
            raise  # not the model's failure: the reaper redoes the reply once it is back
        human, reason = _failure(error, settings)
        human = human.render(language)
        # The model's own words help whoever reads the reply; a bug of ours is in the log only.
        detail = {"detail": str(error)[:500]} if isinstance(error, ModelError) else {}
        meta.update(error={"code": "llm_failed", "reason": reason, "message": human, **detail},
                    duration_ms=_ms(started))
        return _end(context, writer, attempt, MessageStatus.ERROR, meta, error={"code": "llm_failed", "message": human})
    meta.update(model=completion.model, stop_reason=completion.stop_reason,
                usage={"input_tokens": completion.input_tokens, "output_tokens": completion.output_tokens},
                ttft_ms=_ms(started, writer.first_text_at) if writer.first_text_at else None,
                duration_ms=_ms(started))
    if attempt > 1:
        meta["attempts"] = attempt
    return _end(context, writer, attempt, MessageStatus.COMPLETE, meta)


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


def _failure(error, settings):
    """(what the user is told, the reason kept in the metadata): what happened, in words
    they can act on. A bug of ours ends the reply too, rather than being tried again."""
    if not isinstance(error, ModelError):
        log.exception("reply failed", exc_info=error)
        return Msg("reply_failed"), "internal_error"
    if error.code == "too_many_attempts":
        return Msg("llm_interrupted"), error.code
    if error.code == "not_configured":
        return Msg("llm_not_configured"), error.code
    if error.status in (401, 403):
        return Msg("llm_key_refused"), error.code
    if error.status == 404:
        return Msg("llm_model_unknown", model=settings["aisystant.model"]), error.code
    if error.status in (400, 413, 422):
        return Msg("llm_rejected", detail=error.detail[:300]), error.code
    return Msg("llm_failed"), error.code


def _end(context, writer, attempt, status, meta, error=None):
    """Store the outcome if this attempt still owns the reply, then tell the clients: the
    text not sent yet goes with the end, in one round trip. (Were the attempt to stop
    before, what its readers saw is what the next attempt continues.)"""
    reply = writer.reply
    body = _with_database(lambda: _store(context, reply, attempt, status, writer.text, meta))
    if body is None:
        _report(context, reply, attempt, "superseded", meta)
        return "superseded"
    if error:
        writer.flush(end=("error", error))
        events.emit(context.events, "message_error", {"conversation_id": reply.conversation_id, "message_id": reply.id,
                                             **error}, reply.conversation_id)
    else:
        writer.flush(end=("done", body))
    events.emit(context.events, "message_received", body, reply.conversation_id)
    # Once the end is told: the sender waits for that, not for the log line.
    _report(context, reply, attempt, status, meta)
    return status


def _mark_active(context, reply, status):
    """Move the conversation up its owner's list, once the reply's end is told (the sender
    waits for that, not for this), and have it named after its first complete reply."""
    def mark():
        with context.session_factory() as session:
            return messages.mark_active(session, reply.conversation_id)

    try:
        title = _with_database(mark)
    except sa.exc.SQLAlchemyError as error:
        # The reply is stored and told: the list's order is what is lost (and the title
        # waits for the next reply).
        log.warning("reply %s: conversation not marked active (%s)", reply.id, error.__class__.__name__,
                    exc_info=not database_unavailable(error))
        return
    # The title job checks the title again before it writes.
    if status == MessageStatus.COMPLETE and title == DEFAULT_TITLE:
        try:
            enqueue_title(context.redis, reply.id)
        except redis_lib.RedisError:
            log.warning("reply %s: no title job (Redis unavailable)", reply.id)


def _store(context, reply, attempt, status, content, meta):
    with context.session_factory() as session:
        row = messages.finish(session, reply.id, attempt, status, content, meta)
    return None if row is None else present.message(row)


def _with_database(write):
    """Run `write`, waiting out a database outage for up to DATABASE_PATIENCE_SECONDS;
    the lease stays held meanwhile, so no other attempt starts over."""
    deadline, delay = time.monotonic() + DATABASE_PATIENCE_SECONDS, 0.5
    while True:
        try:
            return write()
        except sa.exc.SQLAlchemyError as error:
            if not database_unavailable(error) or time.monotonic() + delay > deadline:
                raise
            log.warning("database unavailable (%s); retrying in %.1f s", error.__class__.__name__, delay)
            gevent.sleep(delay)
            delay = min(delay * 2, 5.0)


def _report(context, reply, attempt, outcome, meta):
    """The reply's line in the log and its metrics, once an attempt ends: ids, model,
    timings and tokens, never the text."""
    usage = meta.get("usage") or {}
    model = meta.get("model") or context.settings["aisystant.model"]
    metrics.observe_reply(outcome, model, meta)
    log.log(logging.WARNING if outcome == "interrupted" else logging.INFO,
            "reply %(status)s: model %(model)s, attempt %(attempt)s, ttft %(ttft_ms)s ms, %(duration_ms)s ms, "
            "tokens %(tokens_in)s in / %(tokens_out)s out",
            {"status": str(outcome), "model": model, "attempt": attempt, "ttft_ms": meta.get("ttft_ms"),
             "duration_ms": meta.get("duration_ms"), "tokens_in": usage.get("input_tokens"),
             "tokens_out": usage.get("output_tokens")},
            extra={"conversation_id": reply.conversation_id, "reason": (meta.get("error") or {}).get("reason")})


def _ms(start, end=None):
    return int(((end or time.monotonic()) - start) * 1000)
