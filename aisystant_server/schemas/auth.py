import colander

from aisystant_server.i18n import Msg
from aisystant_server.schemas import Text, length, pattern

USERNAME = r"[A-Za-z0-9_.\-]{3,50}"
# Deliberately simple: one @, a dot in the domain, no spaces; the mail server has the last word.
EMAIL = r"[^@\s]+@[^@\s]+\.[^@\s]+"
PASSWORD_MIN = 8
PASSWORD_MAX = 1024  # hashing a megabyte would be a denial of service
EMAIL_MAX = 100
URL_MAX = 255


def _email(node, value):
    length(EMAIL_MAX)(node, value)
    pattern(EMAIL, "field_email")(node, value)


def _url(node, value):
    length(URL_MAX)(node, value)
    if not value.lower().startswith(("http://", "https://")) or " " in value:
        raise colander.Invalid(node, Msg("field_url"))


class RegisterSchema(colander.MappingSchema):
    username = colander.SchemaNode(Text(), validator=pattern(USERNAME, "field_username"))
    email = colander.SchemaNode(Text(), validator=_email, preparer=lambda v: v.lower() if isinstance(v, str) else v)
    password = colander.SchemaNode(Text(strip=False, multiline=True), validator=length(PASSWORD_MAX, PASSWORD_MIN))
    avatar_url = colander.SchemaNode(Text(), validator=_url, missing=None)


class LoginSchema(colander.MappingSchema):
    email = colander.SchemaNode(Text(), validator=length(EMAIL_MAX))
    password = colander.SchemaNode(Text(strip=False, multiline=True), validator=length(PASSWORD_MAX))
