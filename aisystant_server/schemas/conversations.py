import colander

from aisystant_server.models import MAX_ID
from aisystant_server.schemas import QueryInt, Text, length

DEFAULT_TITLE = "Nouvelle conversation"
TITLE_MAX = 255
CURSOR_MAX = 200


class CreateConversationSchema(colander.MappingSchema):
    title = colander.SchemaNode(Text(), validator=length(TITLE_MAX), missing=DEFAULT_TITLE)


class RenameConversationSchema(colander.MappingSchema):
    title = colander.SchemaNode(Text(), validator=length(TITLE_MAX))


class ListConversationsQuery(colander.MappingSchema):
    limit = colander.SchemaNode(QueryInt(1, 100), missing=20)
    cursor = colander.SchemaNode(Text(), validator=length(CURSOR_MAX), missing=None)


class ConversationQuery(colander.MappingSchema):
    limit = colander.SchemaNode(QueryInt(1, 500), missing=100)
    before = colander.SchemaNode(QueryInt(1, MAX_ID), missing=None)
