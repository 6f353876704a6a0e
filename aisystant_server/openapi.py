"""The OpenAPI 3.1 description of the API, served at /api/openapi.json.

Written by hand as data, its limits taken from the validation's schemas: the functional
tests check that every route of the app appears here, that real responses validate
against these schemas and that each request field takes what the server takes, so this
document cannot drift from the code unnoticed.
"""

from aisystant_server import __version__
from aisystant_server.models import MAX_ID
from aisystant_server.schemas import BIDI_AND_INVISIBLE
from aisystant_server.schemas.auth import EMAIL, EMAIL_MAX, PASSWORD_MAX, PASSWORD_MIN, URL_MAX, USERNAME
from aisystant_server.schemas.conversations import CURSOR_MAX, TITLE_MAX

NULLABLE_TIMESTAMP = {"type": ["string", "null"], "format": "date-time"}

# What the validation refuses in a request's text (aisystant_server/schemas), as ECMA-262
# patterns, so that a client checking a request against this document before sending it
# neither sends what the server refuses nor refuses what the server takes: a blank value;
# NUL in any field; control characters and the bidi and invisible format characters in
# one-line fields. Blank is Python's whitespace (what `str.strip` removes), spelled out:
# ECMA-262's `\s` is another set. A lookahead rather than `[^x]*[^y][^x]*`, which takes a
# client quadratic time to refuse a long text. (Surrounding whitespace of one-line fields
# is stripped before their length is checked: the server takes a little more than
# maxLength says, never less. A lone surrogate, outside I-JSON's strings, is refused.)


def _class(chars):
    return "".join(f"\\u{ord(char):04x}" for char in sorted(chars))


_SPACE = _class(char for char in map(chr, range(0x10000)) if char.isspace())
_HIDDEN = r"\u0000-\u001f\u007f-\u009f" + _class(BIDI_AND_INVISIBLE)
ONE_LINE = rf"^(?=[\s\S]*[^{_SPACE}{_HIDDEN}])[^{_HIDDEN}]*$"
MULTI_LINE = rf"^(?=[\s\S]*[^{_SPACE}\u0000])[^\u0000]*$"
# The server's EMAIL (Python's `fullmatch`), anchored, with the one-line characters.
assert EMAIL.count(r"[^@\s]") == 3, "EMAIL changed: write its pattern again here"
EMAIL_PATTERN = "^" + EMAIL.replace(r"[^@\s]", rf"[^@{_SPACE}{_HIDDEN}]") + "$"
# http(s), in any case, and no space (the server's `_url`).
URL_PATTERN = rf"^[hH][tT][tT][pP][sS]?://[^ {_HIDDEN}]*$"


def one_line(max_length, **extra):
    return {"type": "string", "minLength": 1, "maxLength": max_length, "pattern": ONE_LINE, **extra}


def multi_line(**extra):
    return {"type": "string", "minLength": 1, "pattern": MULTI_LINE, **extra}


def ref(name):
    return {"$ref": f"#/components/schemas/{name}"}


def obj(properties, required=None):
    return {"type": "object", "properties": properties,
            "required": list(properties) if required is None else required}


SCHEMAS = {
    "User": obj({
        "id": {"type": "integer"}, "username": {"type": "string"}, "email": {"type": "string"},
        "avatar_url": {"type": ["string", "null"]}, "role": {"enum": ["user", "admin"]},
    }),
    "Profile": {"allOf": [ref("User"), obj({"created_at": NULLABLE_TIMESTAMP})]},
    "Conversation": obj({
        "id": {"type": "integer"}, "user_id": {"type": ["integer", "null"]},
        "title": {"type": ["string", "null"]}, "created_at": NULLABLE_TIMESTAMP, "updated_at": NULLABLE_TIMESTAMP,
    }),
    "ConversationSummary": {"allOf": [ref("Conversation"), obj({
        "message_count": {"type": "integer", "minimum": 0}, "last_message_at": NULLABLE_TIMESTAMP,
    })]},
    "Message": obj({
        "id": {"type": "integer"}, "conversation_id": {"type": "integer"},
        "user_id": {"type": ["integer", "null"]}, "role": {"enum": ["user", "assistant", "system"]},
        "content": {"type": "string"},
        "status": {"enum": ["pending", "streaming", "complete", "error", "cancelled"]},
        "metadata": {"type": ["object", "null"], "description":
                     "assistant replies: model, stop_reason, usage {input_tokens, output_tokens}, ttft_ms, duration_ms"},
        "created_at": NULLABLE_TIMESTAMP,
    }),
    "Error": obj({
        "success": {"const": False}, "message": {"type": "string"},
        "code": {"type": "string", "pattern": "^[a-z_]+$"},
        "details": {"type": "object"},
        "request_id": {"type": "string", "description": "also in the X-Request-ID header: finds the request in the log"},
    }, required=["success", "message", "code", "request_id"]),
    "Auth": obj({"user": ref("User"), "token": {"type": "string"}}),
}


def success(data=None, meta=None):
    properties = {"success": {"const": True}, "message": {"type": "string"}}
    required = ["success"]
    if data is not None:
        properties["data"] = data
        required.append("data")
    if meta is not None:
        properties["meta"] = meta
        required.append("meta")
    return obj(properties, required)


def json_response(description, schema):
    return {"description": description, "content": {"application/json": {"schema": schema}}}


ERROR = json_response("Error envelope", ref("Error"))
ID_SCHEMA = {"type": "integer", "minimum": 1, "maximum": MAX_ID}
ID = {"name": "id", "in": "path", "required": True, "schema": ID_SCHEMA}
MID = {"name": "mid", "in": "path", "required": True, "schema": ID_SCHEMA}


def query(name, schema, **extra):
    """An optional query parameter; left empty (`?name=`), it is absent."""
    return {"name": name, "in": "query", "schema": schema, "allowEmptyValue": True, **extra}


def body(properties, required, optional=False):
    """A JSON object; `optional`: the request may have no body at all."""
    return {"required": not optional, "content": {"application/json": {"schema": obj(properties, required)}}}


def operation(summary, responses, secured=True, **extra):
    result = {"summary": summary, "responses": {**responses, "default": ERROR}, **extra}
    if secured:
        result["security"] = [{"bearer": []}]
    return result


def paths():
    conversation_data = success(ref("Conversation"))
    exchange = success(obj({"userMessage": ref("Message"), "assistantMessage": ref("Message")}))
    return {
        "/": {"get": operation("Service name, version and entry points", {
            "200": json_response("Service", obj({"success": {"const": True}, "message": {"type": "string"},
                                                  "endpoints": {"type": "object"}}))}, secured=False)},
        "/api/health": {"get": operation("State of the database and Redis; 503 when one is down", {
            "200": json_response("Healthy", success(obj({
                "status": {"type": "string"}, "database": {"type": "string"}, "redis": {"type": "string"},
                "workers": {"type": ["integer", "null"], "description": "reply workers seen in Redis"},
            }, required=["status", "database", "redis"]))),
            "503": ERROR}, secured=False)},
        "/api/openapi.json": {"get": operation("This document", {
            "200": json_response("OpenAPI 3.1", {"type": "object"})}, secured=False)},
        "/metrics": {"get": operation(
            "Prometheus metrics (text format), for the addresses of METRICS_ALLOW or the bearer of METRICS_TOKEN", {
                "200": {"description": "Prometheus text format", "content": {"text/plain": {
                    "schema": {"type": "string"}}}}}, secured=False)},
        "/api/auth/register": {"post": operation("Create an account", {
            "201": json_response("Registered", success(ref("Auth")))}, secured=False,
            requestBody=body({"username": {"type": "string", "pattern": f"^{USERNAME}$"},
                              "email": one_line(EMAIL_MAX, pattern=EMAIL_PATTERN),
                              "password": multi_line(minLength=PASSWORD_MIN, maxLength=PASSWORD_MAX),
                              "avatar_url": {"anyOf": [one_line(URL_MAX, pattern=URL_PATTERN), {"type": "null"}]}},
                             ["username", "email", "password"]))},
        "/api/auth/login": {"post": operation("Log in; 429 after repeated failures", {
            "200": json_response("Logged in", success(ref("Auth")))}, secured=False,
            requestBody=body({"email": one_line(EMAIL_MAX), "password": multi_line(maxLength=PASSWORD_MAX)},
                             ["email", "password"]))},
        "/api/auth/me": {"get": operation("The caller's profile", {
            "200": json_response("Profile", success(ref("Profile")))})},
        "/api/auth/logout": {"post": operation("Revoke the caller's token", {
            "200": json_response("Logged out", success())})},
        "/api/chat/conversations": {
            "get": operation("The caller's conversations, most recently active first", {
                "200": json_response("A page", success(
                    {"type": "array", "items": ref("ConversationSummary")},
                    obj({"next_cursor": {"type": ["string", "null"]}})))},
                parameters=[
                    query("limit", {"type": "integer", "minimum": 1, "maximum": 100}),
                    query("cursor", one_line(CURSOR_MAX), description="`meta.next_cursor` of the page before")]),
            "post": operation("Create a conversation", {"201": json_response("Created", conversation_data)},
                              requestBody=body({"title": {"anyOf": [one_line(TITLE_MAX), {"type": "null"}]}}, [],
                                               optional=True)),
        },
        "/api/chat/conversations/{id}": {
            "parameters": [ID],
            "get": operation("A conversation and its newest messages, in ascending order", {
                "200": json_response("Conversation", success(
                    obj({"conversation": ref("Conversation"), "messages": {"type": "array", "items": ref("Message")}}),
                    obj({"next_before": {"type": ["integer", "null"]}})))},
                parameters=[
                    query("limit", {"type": "integer", "minimum": 1, "maximum": 500}),
                    query("before", ID_SCHEMA)]),
            "put": operation("Rename a conversation", {"200": json_response("Renamed", conversation_data)},
                             requestBody=body({"title": one_line(TITLE_MAX)}, ["title"])),
            "delete": operation("Delete a conversation and its messages", {
                "200": json_response("Deleted", success())}),
        },
        "/api/chat/conversations/{id}/messages": {
            "parameters": [ID],
            "post": operation(
                "Send a message. Waits for the reply (200) unless `Prefer: respond-async` or `wait=false` "
                "(202, reply pending); 202 too when the wait runs long; 502 when the model fails for good; "
                "503 `llm_not_configured` (the message is kept); 413 over MAX_MESSAGE_CHARS",
                {"200": json_response("Replied", exchange), "202": json_response("Reply on its way", exchange)},
                parameters=[query("wait", {"type": "boolean", "default": True}),
                            {"name": "Prefer", "in": "header", "schema": {"type": "string"},
                             "description": "respond-async: answer 202 at once"}],
                requestBody=body({"content": multi_line()}, ["content"])),
        },
        "/api/chat/conversations/{id}/messages/{mid}/stream": {
            "parameters": [ID, MID],
            "get": operation(
                "The reply as Server-Sent Events: `delta` events (`id: <index>`, data {index, delta}), then one "
                "`done` (data: the message) or `error` (data: {code, message}). Resumable with `Last-Event-ID`; "
                "a finished reply replays. The token may be given as `?token=` (EventSource).",
                {"200": {"description": "text/event-stream", "content": {"text/event-stream": {
                    "schema": {"type": "string"}}}}},
                parameters=[{"name": "Last-Event-ID", "in": "header", "schema": {"type": "integer", "minimum": 0}},
                            {"name": "token", "in": "query", "schema": {"type": "string"}}]),
        },
        "/api/chat/conversations/{id}/messages/{mid}/cancel": {
            "parameters": [ID, MID],
            "post": operation("Stop a reply in flight, keeping its text so far; 409 if it already ended", {
                "200": json_response("Cancelled", success(ref("Message")))}),
        },
    }


def openapi_document():
    """The document; its server is "/" (this host, whatever its name), never one taken
    from the request's `Host`, which the client chooses (and a cache would keep)."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "AiSystant API", "version": __version__,
                 "description": "An AI assistant for DevOps and SRE. Every response is a JSON envelope. "
                                "Strings are I-JSON's (RFC 7493): a lone surrogate is refused."},
        "servers": [{"url": "/"}],
        "paths": paths(),
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
    }
