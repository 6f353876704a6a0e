"""Payloads of the Socket.IO client events.

The original clients send a conversation id alone (`socket.emit("join_conversation", 12)`)
or inside an object (`{conversationId: 12}`); both are accepted, as a number or a numeric
string. Everything else about them is checked as a REST body would be.
"""

import colander

from aisystant_server.i18n import Msg
from aisystant_server.schemas import QueryInt, Text
from aisystant_server.models import MAX_ID


class ConversationId(QueryInt):
    """A conversation id as JSON sends it: an integer, or a string of digits."""

    def __init__(self):
        super().__init__(1, MAX_ID)

    def deserialize(self, node, cstruct):
        if isinstance(cstruct, bool) or not isinstance(cstruct, (int, str, type(colander.null))):
            cstruct = "not an id"
        return super().deserialize(node, cstruct)


class Since(colander.SchemaType):
    """`{"<reply id>": <last index seen>}`: what a rejoining client already has."""

    def serialize(self, node, appstruct):
        return appstruct

    def deserialize(self, node, cstruct):
        if cstruct in (colander.null, None):
            return {}
        if not isinstance(cstruct, dict) or len(cstruct) > 100:
            raise colander.Invalid(node, Msg("field_since"))
        since = {}
        for key, value in cstruct.items():
            if not (str(key).isascii() and str(key).isdigit()) or type(value) is not int or value < -1:
                raise colander.Invalid(node, Msg("field_since"))
            since[int(key)] = value
        return since


class ConversationEvent(colander.MappingSchema):
    """`leave_conversation`, `typing`, `stop_typing`."""

    conversationId = colander.SchemaNode(ConversationId())


class JoinConversation(ConversationEvent):
    since = colander.SchemaNode(Since(), missing={})


class NewMessage(ConversationEvent):
    # The size cap is checked by the handler, as by the REST view (413, not 400).
    content = colander.SchemaNode(Text(multiline=True, strip=False))


def as_mapping(payload):
    """The payload as an object: a bare id becomes `{"conversationId": id}`."""
    if isinstance(payload, (int, str)) and not isinstance(payload, bool):
        return {"conversationId": payload}
    return payload
