"""Small WSGI helpers: status lines, JSON responses, request body and headers."""

from __future__ import annotations

import json
from http import HTTPStatus
from urllib.parse import parse_qs

# Statuses the real API uses that Python's table does not know.
EXTRA_REASONS = {499: "Client Closed Request", 529: "Overloaded"}
CREDENTIAL_HEADERS = ("authorization", "x-api-key")
SIMULATOR_HEADER = ("x-aisystant-simulator", "true")


def status_line(code: int) -> str:
    try:
        reason = HTTPStatus(code).phrase
    except ValueError:
        reason = EXTRA_REASONS.get(code, "Error")
    return f"{code} {reason}"


def json_response(start_response, code: int, body: dict, headers: list[tuple[str, str]] = ()) -> list[bytes]:
    payload = json.dumps(body).encode()
    start_response(
        status_line(code),
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(payload))),
            SIMULATOR_HEADER,
            *headers,
        ],
    )
    return [payload]


def read_body(environ: dict) -> bytes:
    stream = environ["wsgi.input"]
    length = environ.get("CONTENT_LENGTH")
    if length:
        return stream.read(int(length))
    # Chunked uploads carry no length; only a server that ends the input for us can read them.
    if environ.get("wsgi.input_terminated"):
        return stream.read()
    return b""


def request_headers(environ: dict) -> dict[str, str]:
    """The request's headers by lower-case name, credentials left out so they are never recorded."""
    headers = {}
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            headers[key[5:].replace("_", "-").lower()] = value
    if environ.get("CONTENT_TYPE"):
        headers["content-type"] = environ["CONTENT_TYPE"]
    for name in CREDENTIAL_HEADERS:
        headers.pop(name, None)
    return headers


def api_key_scheme(environ: dict) -> str | None:
    """How the client sent its key, `x-api-key` or `bearer`; None when it sent none."""
    if environ.get("HTTP_X_API_KEY", "").strip():
        return "x-api-key"
    scheme, _, token = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return "bearer"
    return None


def query_param(environ: dict, name: str) -> str | None:
    values = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True).get(name)
    return values[-1] if values else None
