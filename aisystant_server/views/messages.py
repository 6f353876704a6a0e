"""Sending a message, following its reply as Server-Sent Events, cancelling it."""

import json
import logging

from pyramid.response import Response

from aisystant_server import events, present, streams
from aisystant_server.errors import Conflict, LLMFailed, LLMNotConfigured, NotFound, ValidationFailed
from aisystant_server.i18n import Msg, translate
from aisystant_server.jobs.queues import after_commit, queue_reply
from aisystant_server.jobs.runtime import request_cancel
from aisystant_server.models import Message, MessageRole, MessageStatus
from aisystant_server.outages import is_outage
from aisystant_server.permissions import Permission
from aisystant_server.resources import MessageContext, MessagesContext
from aisystant_server.schemas.messages import SendMessageQuery, SendMessageSchema
from aisystant_server.services import messages
from aisystant_server.validation import validate_json, validate_query
from aisystant_server.views import api_view, ok

log = logging.getLogger(__name__)


@api_view(route_name="conversations", context=MessagesContext, request_method="POST",
          permission=Permission.MESSAGE_CREATE)
def send(context, request):
    content = validate_json(SendMessageSchema(), request)["content"]
    wait = validate_query(SendMessageQuery(), request)["wait"] and "respond-async" not in request.headers.get(
        "Prefer", "")
    settings, emitter = request.registry.settings, request.registry["events"]
    question, reply = messages.send(request.db, context.conversation, request.identity, content, settings,
                                    request.locale_name)
    if reply is None:
        after_commit(request, events.emit, emitter, "message_received", present.message(question),
                     question.conversation_id)
        _commit(request)
        raise LLMNotConfigured(Msg("llm_not_configured"), details={"user_message_id": question.id})
    data = {"userMessage": present.message(question), "assistantMessage": present.message(reply)}
    after_commit(request, queue_reply, emitter, request.redis, settings, data)
    _commit(request)
    if not wait:
        return ok(request, data, status=202)
    return _answer_when_done(request, streams.ReplyRef.of(reply), data)


def _commit(request):
    # The user message must be stored whatever happens next (and the job enqueued by the
    # after-commit hook) before this request waits or fails: commit now, then go on in a
    # fresh transaction that pyramid_tm ends as usual.
    request.tm.commit()
    request.tm.begin()


def _answer_when_done(request, reply, data):
    """The synchronous answer: 200 with the complete reply, 502 if the model failed, 404 if
    the conversation was deleted meanwhile; 202 with the stored messages when the wait
    runs out or Redis or the database goes away (the question is stored: a client that
    retried on a plain failure would ask it twice)."""
    gone = {"code": "not_found"}
    try:
        kind, final = _wait_for_end(request, reply, request.registry.settings["aisystant.reply_wait_seconds"], gone)
    except Exception as error:
        if not is_outage(error):
            raise
        log.warning("waiting for reply %s: %s; answering 202", reply.id, error.__class__.__name__)
        return ok(request, data, status=202)
    if kind == "timeout":
        return ok(request, data, status=202)
    if kind == "error" and final["code"] == gone["code"]:
        raise NotFound(Msg("conversation_not_found"))  # deleted while the reply was on its way
    if kind == "error":
        raise LLMFailed(final["message"], details={"assistant_message_id": reply.id})
    # `done` carries the reply as stored: no second read of it.
    data["assistantMessage"] = final
    return ok(request, data, status=200 if final["status"] == MessageStatus.COMPLETE else 202)


def _wait_for_end(request, reply, timeout, not_found):
    """(`done`, the stored reply), (`error`, {code, message}) or (`timeout`, None)."""
    for kind, _, data in request.registry["streams.hub"].read(reply, after_index=2**62, timeout=timeout):
        if kind in ("done", "error"):
            return kind, data
        if kind == "timeout":
            return kind, None
        final = _ended(request.registry, reply.id, not_found) if kind == "idle" else None
        if final is not None:
            return final
    return "timeout", None


def _load(registry, message_id):
    """The message as the database has it now, or None. A session of its own: the
    request's may still read from a snapshot taken before the reply was written
    (SQLite keeps a connection's read snapshot)."""
    with registry["db.session_factory"]() as session:
        message = session.get(Message, message_id)
        return None if message is None else present.message(message)


def _ended(registry, reply_id, not_found):
    """How a reply ended, from the database, for readers whose stream went quiet: its
    final event, an error if it was deleted, or None while it is still in flight. (The
    stream is the fast path; this is the safety net for a stream that will never end,
    e.g. its conversation was deleted meanwhile, or Redis lost it.)"""
    message = _load(registry, reply_id)
    if message is None:
        return "error", not_found
    if message["status"] in MessageStatus.in_flight():
        return None
    return _final_event(message)


def _final_event(message):
    error = (message["metadata"] or {}).get("error")
    if message["status"] == MessageStatus.ERROR and error:
        return "error", {"code": error["code"], "message": error["message"]}
    return "done", message


def _reply(context):
    if context.message.role != MessageRole.ASSISTANT:
        raise NotFound(Msg("not_a_reply"))
    return context.message


@api_view(route_name="conversations", context=MessageContext, name="stream", request_method="GET",
          permission=Permission.MESSAGE_READ)
def stream(context, request):
    row = _reply(context)
    reply, after = streams.ReplyRef.of(row), _last_event_id(request)
    if row.status not in MessageStatus.in_flight() and not request.redis.exists(reply.key):
        events_iter = _replay_from_database(present.message(row), after)
    else:
        events_iter = request.registry["streams.hub"].read(reply, after_index=after)
    unavailable = {"code": "service_unavailable", "message": translate(request, Msg("service_unavailable"))}
    not_found = {"code": "not_found", "message": translate(request, Msg("conversation_not_found"))}
    registry = request.registry
    response = Response(app_iter=_sse(events_iter, unavailable, lambda: _ended(registry, reply.id, not_found)),
                        content_type="text/event-stream", charset="utf-8")
    response.headers.update({"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    return response


def _last_event_id(request):
    raw = request.headers.get("Last-Event-ID", request.GET.get("last_event_id", ""))
    if raw == "":
        return -1
    if not (raw.isascii() and raw.isdigit()):
        # Any index: a reply redone many times numbers its events past any fixed bound.
        raise ValidationFailed(details={"Last-Event-ID": Msg("field_index")})
    return int(raw)


def _replay_from_database(message, after):
    """A reply whose stream is gone (it ended long ago, or Redis lost it): its whole text,
    as one delta for a new reader, as a reset for one resuming after index `after`, then
    its end."""
    if message["content"]:
        yield ("delta", 0, message["content"]) if after < 0 else ("reset", after + 1, message["content"])
    kind, data = _final_event(message)
    yield kind, None, data


def _sse(events_iter, unavailable, ended):
    yield b"retry: 2000\n\n"
    try:
        for kind, index, data in events_iter:
            if kind in ("delta", "reset"):
                payload = {"index": index, "delta" if kind == "delta" else "text": data}
                yield f"id: {index}\nevent: {kind}\ndata: {json.dumps(payload, ensure_ascii=False)}\n\n".encode()
            elif kind in ("done", "error"):
                yield _sse_event(kind, data)
                return
            else:
                final = ended()
                if final is not None:
                    yield _sse_event(*final)
                    return
                yield b": keep-alive\n\n"
    except Exception as error:
        if not is_outage(error):
            raise
        # The headers are sent: the failure can only be told in the stream. The client
        # may reconnect with Last-Event-ID once the service is back.
        log.warning("reply stream interrupted: %s", error.__class__.__name__)
        yield _sse_event("error", unavailable)


def _sse_event(kind, data):
    return f"event: {kind}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


@api_view(route_name="conversations", context=MessageContext, name="cancel", request_method="POST",
          permission=Permission.MESSAGE_CANCEL)
def cancel(context, request):
    row = _reply(context)
    reply = streams.ReplyRef.of(row)
    cancelled = row.status in MessageStatus.in_flight() and messages.cancel(
        request.db, row, streams.partial_text(request.redis, reply))
    if not cancelled:
        raise Conflict(Msg("reply_finished"), details={"status": row.status})
    body = present.message(cancelled)
    after_commit(request, _announce_cancel, request.registry["events"], request.redis, reply, body)
    return ok(request, body)


def _announce_cancel(emitter, redis, reply, body):
    request_cancel(redis, reply.id)
    streams.finish(redis, reply, "done", body)
    events.emit(emitter, "message_received", body, reply.conversation_id)
