from aisystant_server import present, streams
from aisystant_server.errors import NotFound
from aisystant_server.i18n import Msg, translate
from aisystant_server.jobs.queues import after_commit, forget_queued
from aisystant_server.jobs.runtime import request_cancel
from aisystant_server.permissions import Permission
from aisystant_server.resources import ConversationContext, ConversationsRoot
from aisystant_server.schemas.conversations import (
    ConversationQuery,
    CreateConversationSchema,
    ListConversationsQuery,
    RenameConversationSchema,
)
from aisystant_server.services import conversations
from aisystant_server.validation import validate_json, validate_query
from aisystant_server.views import api_view, ok


@api_view(route_name="conversations", context=ConversationsRoot, request_method="POST",
          permission=Permission.CONVERSATION_CREATE)
def create(context, request):
    data = validate_json(CreateConversationSchema(), request)
    conversation = conversations.create(request.db, request.identity, data["title"])
    return ok(request, present.conversation(conversation), status=201)


@api_view(route_name="conversations", context=ConversationsRoot, request_method="GET",
          permission=Permission.CONVERSATION_LIST)
def list_(context, request):
    query = validate_query(ListConversationsQuery(), request)
    rows, next_cursor = conversations.list_for_user(request.db, request.identity.id, query["limit"], query["cursor"])
    return ok(request, [present.listed_conversation(row) for row in rows], meta={"next_cursor": next_cursor})


@api_view(route_name="conversations", context=ConversationContext, request_method="GET",
          permission=Permission.CONVERSATION_READ)
def get(context, request):
    query = validate_query(ConversationQuery(), request)
    messages, next_before = conversations.messages_page(request.db, context.conversation.id,
                                                        query["limit"], query["before"])
    return ok(
        request,
        {"conversation": present.conversation(context.conversation),
         "messages": [present.listed_message(message) for message in messages]},
        meta={"next_before": next_before},
    )


@api_view(route_name="conversations", context=ConversationContext, request_method="PUT",
          permission=Permission.CONVERSATION_UPDATE)
def rename(context, request):
    data = validate_json(RenameConversationSchema(), request)
    conversation = conversations.rename(request.db, context.conversation, data["title"])
    if conversation is None:  # deleted since it was looked up
        raise NotFound(Msg("conversation_not_found"))
    return ok(request, present.conversation(conversation))


@api_view(route_name="conversations", context=ConversationContext, request_method="DELETE",
          permission=Permission.CONVERSATION_DELETE)
def delete(context, request):
    in_flight, ended = conversations.reply_streams(request.db, context.conversation.id)
    conversations.delete(request.db, context.conversation)
    gone = {"code": "not_found", "message": translate(request, Msg("conversation_not_found"))}
    after_commit(request, _forget_replies, request.redis, in_flight, ended, gone)
    return ok(request, message=Msg("conversation_deleted"))


def _forget_replies(redis, in_flight, ended, gone):
    # The rows are gone: stop the replies still being written, end their streams for
    # whoever waits on them (briefly kept for those readers), and drop the others.
    for reply in in_flight:
        request_cancel(redis, reply.id)
        forget_queued(redis, reply.id)
        streams.finish(redis, reply, "error", gone, keep_seconds=streams.GONE_KEEP_SECONDS)
    streams.forget(redis, ended)
