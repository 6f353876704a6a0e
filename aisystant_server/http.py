"""HTTP hygiene: security headers, CORS, a URL that decodes, and the request body cap.

`edge_tween` sits above the exception views, so error responses carry the same headers
as successes (a browser discards a cross-origin error without CORS headers, and the
client would see a network error instead of our message). The URL check and the body
cap sit below them, so their refusals get the envelope like any other error; the URL
check comes first, because everything after it reads `request.path`.

Under `aisystant-server serve` the connection handler (`serving.py`) caps and times the
body as it arrives; the cap here covers the other servers (waitress, tests).
"""

from pyramid.response import Response
from pyramid.tweens import EXCVIEW

from aisystant_server.errors import BadRequest, PayloadTooLarge
from aisystant_server.i18n import Msg

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
}
CORS_METHODS = "GET, POST, PUT, DELETE, OPTIONS"
CORS_HEADERS = "Authorization, Content-Type, Accept-Language, Prefer, Last-Event-ID, X-Request-ID"
EXPOSED_HEADERS = "Retry-After, RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset, X-Request-ID"


def edge_headers(origins, origin):
    """The security and CORS headers of a response to a request from `origin` (None
    without an `Origin` header); also used by the HTTP layer for its own answers."""
    headers = dict(SECURITY_HEADERS)
    if origins != {"*"}:
        # The answer depends on the origin, allowed or refused: a cache must not hand
        # a refused origin's answer (no CORS headers) to an allowed one, or the reverse.
        headers["Vary"] = "Origin"
    if origin is not None and origin in origins:
        headers["Access-Control-Allow-Origin"] = origin
        headers["Access-Control-Allow-Credentials"] = "true"
    elif origin is not None and "*" in origins:
        # "*": any page may call the API, but never with the browser's credentials.
        headers["Access-Control-Allow-Origin"] = "*"
    if "Access-Control-Allow-Origin" in headers:
        headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
    return headers


def edge_tween_factory(handler, registry):
    origins = set(registry.settings["cors.origins"])

    def edge_tween(request):
        headers = edge_headers(origins, request.headers.get("Origin"))
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            # A preflight: without the allow headers below, the browser blocks the call.
            response = Response(status=204)
            del response.content_type
            if "Access-Control-Allow-Origin" in headers:
                response.headers["Access-Control-Allow-Methods"] = CORS_METHODS
                response.headers["Access-Control-Allow-Headers"] = CORS_HEADERS
                response.headers["Access-Control-Max-Age"] = "600"
        else:
            response = handler(request)
        vary = headers.pop("Vary", None)
        response.headers.update(headers)
        if vary:
            response.vary = tuple(sorted(set(response.vary or ()) | {vary}))
        return response

    return edge_tween


def url_check_tween_factory(handler, registry):
    def url_check_tween(request):
        try:
            request.path_info  # noqa: B018 (decoding it is the check)
        except UnicodeDecodeError:
            # `/%ff`: the percent-decoded path is not UTF-8, so no route can name it.
            raise BadRequest(Msg("bad_url")) from None
        return handler(request)

    return url_check_tween


def body_cap_tween_factory(handler, registry):
    limit = registry.settings["aisystant.max_body_bytes"]

    def body_cap_tween(request):
        # Bodies are capped anyway: keep them in memory (WebOb would spill those over
        # 10 KB to temporary files).
        request.request_body_tempfile_limit = limit + 1
        if request.content_length is not None and request.content_length > limit:
            raise PayloadTooLarge(Msg("payload_too_large", limit=limit))
        if request.content_length is None and request.method in ("POST", "PUT", "PATCH"):
            # A chunked body has no length up front: read one byte past the cap to know.
            body = request.body_file_raw.read(limit + 1)
            if len(body) > limit:
                raise PayloadTooLarge(Msg("payload_too_large", limit=limit))
            request.body = body
        return handler(request)

    return body_cap_tween


def includeme(config):
    config.add_tween("aisystant_server.http.edge_tween_factory", over=EXCVIEW)
    config.add_tween("aisystant_server.http.body_cap_tween_factory", under=EXCVIEW)
    # Right under the exception views, above the rate limit (which reads the path).
    config.add_tween("aisystant_server.http.url_check_tween_factory", under=EXCVIEW,
                     over="aisystant_server.ratelimit.ratelimit_tween_factory")
