import colander

from aisystant_server.schemas import QueryInt, Text, length

DEFAULT_TITLE = "Nouvelle conversation"
MAX_ID = 2**31 - 1


class CreateConversationSchema(colander.MappingSchema):
    title = colander.SchemaNode(Text(), validator=length(255), missing=DEFAULT_TITLE)


class RenameConversationSchema(colander.MappingSchema):
    title = colander.SchemaNode(Text(), validator=length(255))


class ListConversationsQuery(colander.MappingSchema):
    limit = colander.SchemaNode(QueryInt(1, 100), missing=20)
    cursor = colander.SchemaNode(Text(), validator=length(200), missing=None)


class ConversationQuery(colander.MappingSchema):
    limit = colander.SchemaNode(QueryInt(1, 500), missing=100)
    before = colander.SchemaNode(QueryInt(1, MAX_ID), missing=None)
