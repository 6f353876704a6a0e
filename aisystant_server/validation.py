"""Turns a request body or query string into validated data, or a 4xx in the envelope.

Every JSON body goes through `validate_json`: content type, UTF-8, JSON syntax, an
object at the top, the colander schema, then no NUL byte or lone surrogate in a field it
took (PostgreSQL cannot store the first, UTF-8 cannot encode the second). Fields the
schema does not know are ignored.
"""

import json

import colander

from aisystant_server.errors import UnsupportedMediaType, ValidationFailed
from aisystant_server.i18n import Msg


def validate_json(schema, request):
    body = request.body
    if not body.strip():
        data = {}
    else:
        if request.content_type.strip().lower() not in ("application/json", ""):  # media types ignore case
            raise UnsupportedMediaType()
        try:
            data = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise ValidationFailed(Msg("invalid_json")) from None
    return validate_object(schema, data)


def validate_object(schema, data):
    """A decoded JSON value (a body, a Socket.IO payload) checked against `schema`."""
    if not isinstance(data, dict):
        raise ValidationFailed(Msg("json_object_expected"))
    value = deserialize(schema, data)
    # In the fields the schema took only: the others are ignored, whatever they hold.
    bad = _first_bad_string(value)
    if bad is not None:
        raise ValidationFailed(details={bad: Msg("field_bad_characters")})
    return value


def validate_query(schema, request):
    # `?cursor=` is the parameter left empty, as a form sends it: absent, not blank.
    return deserialize(schema, {key: value for key, value in request.GET.items() if value != ""})


def deserialize(schema, data):
    try:
        return schema.deserialize(data)
    except colander.Invalid as invalid:
        raise ValidationFailed(details=_field_messages(invalid)) from None


def _field_messages(invalid):
    # colander.Invalid.asdict() joins messages as translated text; keep the first
    # untranslated message per field so it can follow the request's language.
    messages = {}
    for path in invalid.paths():
        node = path[-1]
        field = ".".join(error.node.name for error in path if error.node.name) or "body"
        if node.msg is not None and field not in messages:
            messages[field] = node.msg[0] if isinstance(node.msg, list) else node.msg
    return messages


def _first_bad_string(value, path="body"):
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path
        return path if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            found = _first_bad_string(key, path) or _first_bad_string(item, key if path == "body" else f"{path}.{key}")
            if found:
                return found
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = _first_bad_string(item, f"{path}.{index}")
            if found:
                return found
    return None
