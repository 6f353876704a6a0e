import colander

from aisystant_server.schemas import Text


class SendMessageSchema(colander.MappingSchema):
    # Multi-line and kept as typed: pasted logs keep their indentation and blank lines.
    # The size cap is the view's (413, like a body over the cap), not a 400.
    content = colander.SchemaNode(Text(multiline=True, strip=False))


class SendMessageQuery(colander.MappingSchema):
    wait = colander.SchemaNode(
        colander.Boolean(false_choices=("false", "0", "no"), true_choices=("true", "1", "yes")), missing=True)
