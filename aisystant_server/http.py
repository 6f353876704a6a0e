"""HTTP hygiene: security headers, CORS and the request body cap.

`edge_tween` sits above the exception views, so error responses carry the same headers
as successes (a browser discards a cross-origin error without CORS headers, and the
client would see a network error instead of our message). The body cap sits below
them, so a body over the cap gets the envelope like any other error.
"""

from pyramid.response import Response
from pyramid.tweens import EXCVIEW

from aisystant_server.errors import PayloadTooLarge
from aisystant_server.i18n import Msg

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
}
CORS_METHODS = "GET, POST, PUT, DELETE, OPTIONS"
CORS_HEADERS = "Authorization, Content-Type, Accept-Language, Prefer, Last-Event-ID"
EXPOSED_HEADERS = "Retry-After, RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset"


def edge_tween_factory(handler, registry):
    origins = set(registry.settings["cors.origins"])

    def edge_tween(request):
        origin = request.headers.get("Origin")
        allowed = origin is not None and ("*" in origins or origin in origins)
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            # A preflight: without the allow headers below, the browser blocks the call.
            response = Response(status=204)
            del response.content_type
            if allowed:
                response.headers["Access-Control-Allow-Methods"] = CORS_METHODS
                response.headers["Access-Control-Allow-Headers"] = CORS_HEADERS
                response.headers["Access-Control-Max-Age"] = "600"
        else:
            response = handler(request)
        response.headers.update(SECURITY_HEADERS)
        if allowed:
            if origin in origins:
                response.headers["Access-Control-Allow-Origin"] = origin
                response.headers["Access-Control-Allow-Credentials"] = "true"
                response.vary = tuple(sorted(set(response.vary or ()) | {"Origin"}))
            else:
                # "*": any page may call the API, but never with the browser's credentials.
                response.headers["Access-Control-Allow-Origin"] = "*"
            response.headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
        return response

    return edge_tween


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
