"""Colander types shared by the schemas: strict text and bounded integers.

colander's `String` turns `42` or `["a"]` into text; an API must refuse them instead,
so a number for `email` or a list for `title` is a 400 naming the field.
"""

import re
import unicodedata

import colander

from aisystant_server.i18n import Msg

# Control characters, and the format characters that reorder or hide text (bidi
# overrides and isolates, zero-width joiners): refused in one-line fields.
BIDI_AND_INVISIBLE = frozenset("\u200b\u200c\u200d\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
                               "\u2066\u2067\u2068\u2069\ufeff")


class Text(colander.SchemaType):
    """A JSON string. One-line text is stripped and refuses control and bidi characters."""

    def __init__(self, multiline=False, strip=True):
        self.multiline, self.strip = multiline, strip

    def serialize(self, node, appstruct):
        return colander.null if appstruct in (colander.null, None) else appstruct

    def deserialize(self, node, cstruct):
        if cstruct is colander.null or cstruct is None:
            return colander.null
        if not isinstance(cstruct, str):
            raise colander.Invalid(node, Msg("field_not_string"))
        value = cstruct.strip() if self.strip else cstruct
        if not value.strip():
            # Absent means "use the default"; an explicit blank string is a mistake.
            raise colander.Invalid(node, Msg("field_blank"))
        if not self.multiline and any(
            unicodedata.category(char) == "Cc" or char in BIDI_AND_INVISIBLE for char in value
        ):
            raise colander.Invalid(node, Msg("field_bad_characters"))
        return value


def length(max_chars, min_chars=0):
    def validator(node, value):
        if len(value) > max_chars:
            raise colander.Invalid(node, Msg("field_too_long", max=max_chars))
        if len(value) < min_chars:
            raise colander.Invalid(node, Msg("field_too_short", min=min_chars))

    return validator


def pattern(regex, message_key):
    compiled = re.compile(regex)

    def validator(node, value):
        if not compiled.fullmatch(value):
            raise colander.Invalid(node, Msg(message_key))

    return validator


class QueryInt(colander.SchemaType):
    """An integer from a query string, within bounds, or a clear error naming the bounds."""

    def __init__(self, min_value, max_value):
        self.min_value, self.max_value = min_value, max_value

    def serialize(self, node, appstruct):
        return appstruct

    def deserialize(self, node, cstruct):
        if cstruct in (colander.null, None, ""):
            return colander.null
        text = str(cstruct).strip()
        if not (text.isascii() and text.isdigit()) or not self.min_value <= int(text) <= self.max_value:
            raise colander.Invalid(node, Msg("field_integer_range", min=self.min_value, max=self.max_value))
        return int(text)
