"""Rate limits kept in Redis, so every API process shares them.

- `/api/*`: a fixed window per client address (`RATE_LIMIT_WINDOW_MS`,
  `RATE_LIMIT_MAX_REQUESTS`), announced with `RateLimit-*` headers.
- Login: failures counted per address and per account; after `login.max_failures`
  in `login.window_seconds`, 429 until the window passes, whatever the password.

If Redis is down the API keeps answering (the limit fails open, loudly in the logs):
refusing every request would turn a cache outage into a full outage.
"""

import logging
import time

import redis
from pyramid.tweens import EXCVIEW

from aisystant_server.errors import RateLimited

log = logging.getLogger(__name__)
EXEMPT_PATHS = ("/api/health",)


def client_address(request):
    """The socket's peer; with TRUST_PROXY, the address our proxy saw, i.e. the last
    `X-Forwarded-For` entry (the ones before it are the client's own say, and trusting
    them would let anyone pick a new address for every request)."""
    forwarded = request.headers.get("X-Forwarded-For", "")
    if request.registry.settings["aisystant.trust_proxy"] and forwarded.strip():
        return forwarded.split(",")[-1].strip()
    return request.remote_addr


def _hit(connection, key, window_seconds):
    pipe = connection.pipeline()
    pipe.incr(key)
    pipe.expire(key, window_seconds, nx=True)
    pipe.ttl(key)
    count, _, ttl = pipe.execute()
    return count, max(ttl, 1)


def ratelimit_tween_factory(handler, registry):
    settings = registry.settings
    window = max(1, settings["ratelimit.window_ms"] // 1000)
    limit = settings["ratelimit.max_requests"]

    def ratelimit_tween(request):
        if not request.path.startswith("/api/") or request.path in EXEMPT_PATHS or request.method == "OPTIONS":
            return handler(request)
        key = f"aisystant:ratelimit:{client_address(request)}:{int(time.time()) // window}"
        try:
            count, reset = _hit(request.redis, key, window)
        except redis.RedisError:
            log.exception("rate limit unavailable (Redis); letting the request through")
            return handler(request)
        headers = {"RateLimit-Limit": str(limit), "RateLimit-Remaining": str(max(0, limit - count)),
                   "RateLimit-Reset": str(reset)}
        request.add_response_callback(lambda request, response: response.headers.update(headers))
        if count > limit:
            raise RateLimited(reset)
        return handler(request)

    return ratelimit_tween


class LoginThrottle:
    """Counts an attempt before the password is checked, so that parallel guesses cannot
    all pass a check made before any of them failed; a success takes its count back."""

    def __init__(self, connection, address, email, max_failures, window_seconds):
        self.redis = connection
        self.keys = [f"aisystant:login-failures:address:{address}",
                     f"aisystant:login-failures:account:{email.lower()}"]
        self.max_failures, self.window = max_failures, window_seconds

    def attempt(self):
        for key in self.keys:
            count, ttl = _hit(self.redis, key, self.window)
            if count > self.max_failures:
                raise RateLimited(ttl, "login_throttled")

    def succeeded(self):
        self.redis.decr(self.keys[0])
        self.redis.delete(self.keys[1])


def login_throttle(request, email):
    settings = request.registry.settings
    return LoginThrottle(request.redis, client_address(request), email,
                         settings["login.max_failures"], settings["login.window_seconds"])


def includeme(config):
    config.add_tween("aisystant_server.ratelimit.ratelimit_tween_factory", under=EXCVIEW)
