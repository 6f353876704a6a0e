"""The request id, the access log and the request metrics: one tween, at the very top.

At the top, so that it sees every answer of the app, errors included, and times all of
it. It takes the request id from a sane `X-Request-ID` (a proxy's or a client's) or
makes one, returns it in the response's `X-Request-ID`, and binds it to every log line
of the request; the error envelope repeats it as `request_id` (errors.py), so a user's
error can be found in the log.

One access line per request: method, path (the query string with its secrets masked:
the stream endpoint takes `?token=`), status, duration, user id, request id. A stream's
line is written when the stream ends, with its whole duration. Health checks and
scrapes that succeed are logged at DEBUG, so that probes do not drown the log.

Its cost per request is kept small (the performance work measures it): no store is
read, the user id comes from the token's claims only if the request already decoded
them, and the metrics are one counter and one histogram.
"""

import logging
import re
import time
from urllib.parse import quote

from pyramid.tweens import INGRESS

from aisystant_server import logs, metrics

log = logging.getLogger(__name__)

SECRET_PARAMETER = re.compile(r"(^|&)([^=&]*(?:token|password|secret|key)[^=&]*)=[^&]*", re.IGNORECASE)
QUIET_PATHS = frozenset({"/api/health", "/metrics"})
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Characters a path keeps in the log; the rest is percent-encoded (no spaces, no line breaks).
PATH_SAFE = "/:@!$&'()*+,;=-._~%"


def logged_path(environ):
    """The path and query string as the log shows them: secrets masked, nothing that
    could break a line."""
    path = quote(environ.get("PATH_INFO", "").encode("latin-1"), safe=PATH_SAFE)
    query = environ.get("QUERY_STRING")
    if query:
        path += "?" + quote(SECRET_PARAMETER.sub(r"\1\2=***", query), safe=PATH_SAFE + "?")
    return path


def access_tween_factory(handler, registry):
    view_names = {entry["introspectable"]["name"] for entry in registry.introspector.get_category("views")}
    children = {}  # (route, method, status) -> (counter, histogram), few: route labels are templates

    def access_tween(request):
        started = time.perf_counter()
        rid = logs.request_id(request.environ)
        with logs.fields(request_id=rid):
            response = handler(request)
        response.headers[logs.REQUEST_ID_HEADER] = rid
        if response.content_type == "text/event-stream":
            response.app_iter = _Logged(response.app_iter, _access, request, response, started, rid)
        else:
            _access(request, response, started, rid)
        return response

    def _access(request, response, started, rid):
        seconds = time.perf_counter() - started
        method = request.method if request.method in METHODS else "other"
        status = response.status_code
        key = (_route_label(request), method, status)
        counted = children.get(key)
        if counted is None:  # the labelled metrics, looked up once (labels() takes a lock)
            counted = children[key] = (metrics.REQUESTS.labels(*key), metrics.REQUEST_SECONDS.labels(*key[:2]))
        counted[0].inc()
        counted[1].observe(seconds)
        level = logging.DEBUG if status < 400 and request.environ.get("PATH_INFO") in QUIET_PATHS else logging.INFO
        if not log.isEnabledFor(level):
            return
        claims = request.__dict__.get("jwt_claims")  # only if this request decoded its token
        subject = claims.get("sub") if claims else None
        log.log(level, "%(method)s %(path)s %(status)s %(duration_ms).1fms",
                {"method": method, "path": logged_path(request.environ), "status": status,
                 "duration_ms": round(seconds * 1000, 1)},
                extra={"user_id": int(subject) if subject and subject.isdigit() else None, "request_id": rid})

    def _route_label(request):
        """The route as a template (`/api/chat/conversations/{id}/messages`), never the
        raw path: a label's values must stay few. Traversal goes through ids and fixed
        names only; a view name nobody registered (`/conversations/abc`) is `{name}`."""
        route = request.matched_route
        if route is None:
            return "none"
        if not route.pattern.endswith("*traverse"):
            return route.pattern
        parts = [route.pattern[:-len("*traverse")].rstrip("/")]
        parts.extend("{id}" if name.isdigit() else name for name in getattr(request, "traversed", ()))
        view_name = getattr(request, "view_name", "")
        if view_name:
            parts.append("{id}" if view_name.isdigit() else view_name if view_name in view_names else "{name}")
        return "/".join(parts)

    return access_tween


class _Logged:
    """A streamed body that writes the access line once the stream ends."""

    def __init__(self, app_iter, write, *args):
        self.app_iter, self.write, self.args = app_iter, write, args

    def __iter__(self):
        return iter(self.app_iter)

    def close(self):
        try:
            if hasattr(self.app_iter, "close"):
                self.app_iter.close()
        finally:
            self.write(*self.args)


def includeme(config):
    config.add_tween("aisystant_server.access.access_tween_factory", under=INGRESS)
