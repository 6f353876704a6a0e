"""Traversal contexts for /api/chat/conversations/{id}/messages/{mid}/...

Each context is built from rows already loaded and carries its own `__acl__`, so a
permission check never queries. A conversation is loaded only among the caller's own:
someone else's and a missing one are the same KeyError, hence the same 404.
"""

from pyramid.authorization import DENY_ALL, Allow, Authenticated

from aisystant_server.errors import Unauthorized
from aisystant_server.models import MAX_ID
from aisystant_server.permissions import Permission
from aisystant_server.services import conversations as conversation_service


def parse_id(key):
    if not key.isascii() or not key.isdigit() or int(key) > MAX_ID or int(key) < 1:
        raise KeyError(key)
    return int(key)


class AccountRoot:
    """/api/auth/me and /logout: any signed-in user, on their own account."""

    __acl__ = [(Allow, Authenticated, Permission.ACCOUNT_READ), DENY_ALL]

    def __init__(self, request):
        self.request = request


class ConversationsRoot:
    __acl__ = [
        (Allow, Authenticated, (Permission.CONVERSATION_CREATE, Permission.CONVERSATION_LIST)),
        DENY_ALL,
    ]

    def __init__(self, request):
        self.request = request

    def __getitem__(self, key):
        user = self.request.identity
        if user is None:
            # Anonymous callers learn nothing about ids: 401 before any lookup.
            raise Unauthorized()
        conversation = conversation_service.get_for_user(self.request.db, user.id, parse_id(key))
        if conversation is None:
            raise KeyError(key)
        return ConversationContext(self.request, conversation, parent=self, name=key)


class ConversationContext:
    def __init__(self, request, conversation, parent, name):
        self.request = request
        self.conversation = conversation
        self.__parent__, self.__name__ = parent, name
        self.__acl__ = [
            (Allow, f"user:{conversation.user_id}", (
                Permission.CONVERSATION_READ, Permission.CONVERSATION_UPDATE,
                Permission.CONVERSATION_DELETE, Permission.MESSAGE_CREATE,
            )),
            DENY_ALL,
        ]

    def __getitem__(self, key):
        if key != "messages":
            raise KeyError(key)
        return MessagesContext(self)


class MessagesContext:
    """/conversations/{id}/messages: POST sends; /{mid} below it is one message."""

    __name__ = "messages"

    def __init__(self, parent):
        self.__parent__ = parent
        self.request = parent.request
        self.conversation = parent.conversation
        self.__acl__ = parent.__acl__

    def __getitem__(self, key):
        message = conversation_service.get_message(self.request.db, self.conversation.id, parse_id(key))
        if message is None:
            raise KeyError(key)
        return MessageContext(self, message, key)


class MessageContext:
    def __init__(self, parent, message, name):
        self.__parent__, self.__name__ = parent, name
        self.request = parent.request
        self.conversation = parent.conversation
        self.message = message
        self.__acl__ = [
            (Allow, f"user:{self.conversation.user_id}", (Permission.MESSAGE_READ, Permission.MESSAGE_CANCEL)),
            DENY_ALL,
        ]
