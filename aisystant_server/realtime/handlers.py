"""The Socket.IO client events: authenticate, join, leave, send, type.

Each event is answered through its acknowledgement with the REST envelope
(`{"success": true, "data"}` or `{"success": false, "code", "message", "details"}`),
from the same services and the same errors as the REST views: a payload of the wrong
shape, a conversation that is not the caller's, a rate limit, an outage are error
acknowledgements, never a dropped connection or a traceback. Each handler runs in its
own greenlet with its own short transaction.

Catching up: pub/sub loses what is published while a listener reconnects, and a client
that (re)joins mid-reply has missed the start. Joining therefore replays, to the joining
client only, the text of the conversation's replies in flight from their streams (all
of it, or what follows `since[reply id]`), and the end of a reply named in `since` that
ended meanwhile. A client applies deltas by index, so what it receives twice is harmless.
"""

import logging
from urllib.parse import parse_qs

import webob
from socketio.exceptions import ConnectionRefusedError

from aisystant_server import events, metrics, present, streams
from aisystant_server.errors import (
    AppError,
    InternalError,
    LLMNotConfigured,
    NotFound,
    RateLimited,
    ServiceUnavailable,
    envelope_body,
)
from aisystant_server.i18n import Msg, negotiate_language
from aisystant_server.jobs.queues import queue_reply
from aisystant_server.logs import new_request_id
from aisystant_server.models import MessageStatus, User
from aisystant_server.outages import is_outage, log_failure
from aisystant_server.ratelimit import address_of, hit_request_window
from aisystant_server.schemas.realtime import ConversationEvent, JoinConversation, NewMessage, as_mapping
from aisystant_server.services import conversations, messages
from aisystant_server.validation import validate_object

log = logging.getLogger(__name__)


class Handlers:
    def __init__(self, sio, registry, sessions):
        self.sio, self.registry, self.sessions = sio, registry, sessions
        self.settings, self.redis = registry.settings, registry["redis"]
        self.session_factory = registry["db.session_factory"]

    def register(self):
        self.sio.on("connect", self.connect)
        self.sio.on("disconnect", self.sessions.forget)
        for name, handler in (("join_conversation", self.join), ("leave_conversation", self.leave),
                              ("new_message", self.new_message), ("typing", self.typing),
                              ("stop_typing", self.stop_typing)):
            self.sio.on(name, self._answering(handler))

    # connect

    def connect(self, sid, environ, auth):
        language = negotiate_language(webob.Request(environ))
        token = (auth or {}).get("token") if isinstance(auth, dict) else None
        token = token or (parse_qs(environ.get("QUERY_STRING", "")).get("token") or [None])[0]
        try:
            claims = self.registry["tokens"].decode(token) if isinstance(token, str) and token else None
            user = claims and self._user(claims)
        except Exception as error:  # noqa: BLE001 - refused with a message, never a traceback
            if not is_outage(error):
                log.exception("socket connect failed")
            raise _refusal("service_unavailable", Msg("service_unavailable"), language) from None
        if user is None:
            raise _refusal("unauthorized", Msg("invalid_token" if token else "unauthorized"), language)
        self.sessions.open(sid, user, claims, language, address_of(environ, self.settings))

    def _user(self, claims):
        with self.session_factory() as session:
            user = self.registry["accounts"].of(session, claims)
            return user and {"id": user.id, "username": user.username}

    # client events

    def join(self, sid, session, payload):
        data = validate_object(JoinConversation(), as_mapping(payload))
        conversation_id, since = data["conversationId"], data["since"]
        with self.session_factory() as db:
            conversation = self._own_conversation(db, session, conversation_id)
            in_flight, _ = conversations.reply_streams(db, conversation_id)
            # Replies the client was following that have ended since: their final message.
            ended = {row.id: present.message(row) for row in conversations.replies(db, conversation_id, list(since))
                     if row.status not in MessageStatus.in_flight()} if since else {}
        self.sio.enter_room(sid, events.conversation_room(conversation_id))
        session["rooms"].add(conversation_id)
        self.sio.start_background_task(self._replay, sid, in_flight, ended, since)
        return {"conversation": present.conversation(conversation),
                "replies": [{"message_id": reply.id, "status": MessageStatus.STREAMING,
                             "index": self._last_index(reply)} for reply in in_flight]}

    def leave(self, sid, session, payload):
        conversation_id = validate_object(ConversationEvent(), as_mapping(payload))["conversationId"]
        self.sio.leave_room(sid, events.conversation_room(conversation_id))
        session["rooms"].discard(conversation_id)
        return None

    def new_message(self, sid, session, payload):
        data = validate_object(NewMessage(), payload)
        with self.session_factory() as db, db.begin():
            conversation = self._own_conversation(db, session, data["conversationId"])
            user = db.get(User, session["user_id"])
            question, reply = messages.send(db, conversation, user, data["content"], self.settings,
                                            session["language"])
            stored = present.message(question), reply and present.message(reply)
        if stored[1] is None:
            events.emit(self.sio, "message_received", stored[0], stored[0]["conversation_id"])
            raise LLMNotConfigured(Msg("llm_not_configured"), details={"user_message_id": stored[0]["id"]})
        exchange = {"userMessage": stored[0], "assistantMessage": stored[1]}
        queue_reply(self.sio, self.redis, self.settings, exchange)
        return exchange

    def typing(self, sid, session, payload):
        return self._relay("typing", sid, session, payload)

    def stop_typing(self, sid, session, payload):
        return self._relay("stop_typing", sid, session, payload)

    def _relay(self, event, sid, session, payload):
        conversation_id = validate_object(ConversationEvent(), as_mapping(payload))["conversationId"]
        if conversation_id not in session["rooms"]:
            # Only a member of the room (its owner, who joined) may type in it.
            raise NotFound(Msg("conversation_not_found"))
        events.emit(self.sio, event, {"conversation_id": conversation_id, "username": session["username"]},
                    conversation_id, skip_sid=sid)
        return None

    # plumbing

    def _answering(self, handler):
        """`handler(sid, session, payload)` answered through the acknowledgement."""

        def answer(sid, payload=None):
            session = self.sessions.get(sid)
            if session is None:
                return None
            language = session["language"]
            try:
                count, limit, reset, _ = hit_request_window(self.redis, session["address"], self.settings)
                if count > limit:
                    raise RateLimited(reset)
                data = handler(sid, session, payload)
            except AppError as error:
                return _error(error, language)
            except Exception as error:  # noqa: BLE001 - an acknowledgement, never a traceback
                request_id = new_request_id()  # what the user reports, to find this line
                if is_outage(error):
                    log.warning("socket event: store unavailable (%s)", error.__class__.__name__,
                                extra={"request_id": request_id})
                    metrics.store_error(error)
                    return _error(ServiceUnavailable(), language, request_id)
                log.exception("socket event failed", extra={"request_id": request_id})
                return _error(InternalError(), language, request_id)
            return {"success": True} if data is None else {"success": True, "data": data}

        return answer

    def _own_conversation(self, db, session, conversation_id):
        conversation = conversations.get_for_user(db, session["user_id"], conversation_id)
        if conversation is None:
            raise NotFound(Msg("conversation_not_found"))
        return conversation

    def _last_index(self, reply):
        return streams.replay(self.redis.xrange(reply.key))[1] - 1

    def _replay(self, sid, in_flight, ended, since):
        """What the joining client missed: the text of the replies in flight from their
        streams (after `since[id]`), and the final message of those that ended."""
        try:
            for reply in in_flight:
                for kind, index, data in streams.events_of(self.redis.xrange(reply.key), since.get(reply.id, -1)):
                    self._send_to(sid, reply, kind, index, data)
        except Exception as error:  # noqa: BLE001 - the client still has the stream endpoint and REST
            log_failure(log, error, "could not replay the replies of a joined conversation")
        for message in ended.values():
            self.sio.emit("message_received", message, to=sid)

    def _send_to(self, sid, reply, kind, index, data):
        ids = {"conversation_id": reply.conversation_id, "message_id": reply.id}
        if kind == "delta":
            self.sio.emit("message_delta", {**ids, "index": index, "delta": data}, to=sid)
        elif kind == "reset":
            self.sio.emit("message_reset", {**ids, "index": index, "text": data}, to=sid)
        elif kind == "done":
            self.sio.emit("message_received", data, to=sid)
        else:
            self.sio.emit("message_error", {**ids, **data}, to=sid)


def _error(error, language, request_id=None):
    return envelope_body(error.code, error.message, error.details, lambda text: _text(text, language),
                         request_id or new_request_id())


def _text(text, language):
    return text.render(language) if isinstance(text, Msg) else str(text)


def _refusal(code, message, language):
    text = message.render(language)
    return ConnectionRefusedError(text, {"code": code, "message": text})
