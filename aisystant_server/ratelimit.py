"""Rate limits kept in Redis, so every API process shares them.

- `/api/*`: a fixed window per client address (`RATE_LIMIT_WINDOW_MS`,
  `RATE_LIMIT_MAX_REQUESTS`), announced with `RateLimit-*` headers.
- Login: failures counted per address and per account; after `login.max_failures`
  in `login.window_seconds`, 429 until the window passes, whatever the password.

If Redis is down the API keeps answering (the limit fails open, loudly in the logs):
refusing every request would turn a cache outage into a full outage. The login throttle
does not: without its counts, a login answers 503.
"""

import logging
import random
import time
import uuid

import redis
from pyramid.tweens import EXCVIEW

from aisystant_server.errors import RateLimited
from aisystant_server.outages import log_failure
from aisystant_server.security import REVOCATION_LOOKUP, REVOKED_KEY

log = logging.getLogger(__name__)
EXEMPT_PATHS = ("/api/health",)


def client_address(request):
    return address_of(request.environ, request.registry.settings)


def address_of(environ, settings):
    """The socket's peer; with TRUST_PROXY, the address our proxy saw, i.e. the last
    `X-Forwarded-For` entry (the ones before it are the client's own say, and trusting
    them would let anyone pick a new address for every request)."""
    forwarded = environ.get("HTTP_X_FORWARDED_FOR", "")
    if settings["aisystant.trust_proxy"] and forwarded.strip():
        return forwarded.split(",")[-1].strip()
    return environ.get("REMOTE_ADDR")


def hit_request_window(connection, address, settings, revoked_key=None):
    """Count one request of `address` (REST or Socket.IO alike): (count, limit, seconds
    until the window resets, whether `revoked_key` exists)."""
    window = max(1, settings["ratelimit.window_ms"] // 1000)
    keys = [f"aisystant:ratelimit:{address}:{int(time.time()) // window}", *([revoked_key] if revoked_key else [])]
    count, reset, revoked = _hit(connection, keys, window)
    return count, settings["ratelimit.max_requests"], reset, revoked


# One command where a MULTI/EXEC pipeline took five, and the token's revocation another
# round trip: this runs on every API request.
_HIT = """
local count = redis.call('INCR', KEYS[1])
local ttl = redis.call('TTL', KEYS[1])
if ttl < 0 then
  redis.call('EXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
local revoked = 0
if KEYS[2] then
  revoked = redis.call('EXISTS', KEYS[2])
end
return {count, ttl, revoked}
"""
_hit_script = None


def _hit(connection, keys, window_seconds):
    global _hit_script
    if _hit_script is None:
        _hit_script = connection.register_script(_HIT)
    count, ttl, revoked = _hit_script(keys=keys, args=[window_seconds], client=connection)
    return count, max(ttl, 1), bool(revoked)


def ratelimit_tween_factory(handler, registry):
    settings = registry.settings

    def ratelimit_tween(request):
        if not request.path.startswith("/api/") or request.path in EXEMPT_PATHS or request.method == "OPTIONS":
            return handler(request)
        claims = request.verified_claims
        jti = claims and claims["jti"]
        try:
            count, limit, reset, revoked = hit_request_window(request.redis, client_address(request), settings,
                                                              jti and REVOKED_KEY.format(jti))
        except redis.RedisError as error:
            log_failure(log, error, "rate limit unavailable; letting the request through")
            return handler(request)
        if jti:
            request.environ[REVOCATION_LOOKUP] = revoked
        headers = {"RateLimit-Limit": str(limit), "RateLimit-Remaining": str(max(0, limit - count)),
                   "RateLimit-Reset": str(reset)}
        request.add_response_callback(lambda request, response: response.headers.update(headers))
        if count > limit:
            raise RateLimited(reset)
        return handler(request)

    return ratelimit_tween


# KEYS: failures (address, account), slots held (address, account), waiting (address,
# account); ARGV: max, lease ms, holder, ms after which a waiter that stopped asking is
# dropped. Redis's clock, not the callers', dates the leases and the arrivals. A caller
# joins both queues the first time it asks, dated once (so two callers are in the same
# order in both), and gets a slot when it is among the first `free` waiters of each.
_TAKE_SLOT = """
local max, lease, holder, stale = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
-- Arrivals to the microsecond: two callers in the same millisecond would tie, and a tie
-- is ordered by the callers' random ids.
local arrival = tonumber(time[1]) * 1000000 + tonumber(time[2])
for i = 1, 2 do
  if tonumber(redis.call('GET', KEYS[i]) or '0') >= max then
    redis.call('ZREM', KEYS[5], holder)
    redis.call('ZREM', KEYS[6], holder)
    return {-1, redis.call('PTTL', KEYS[i])}
  end
end
local granted = true
for i = 1, 2 do
  redis.call('ZREMRANGEBYSCORE', KEYS[i + 2], '-inf', now)
  redis.call('ZREMRANGEBYSCORE', KEYS[i + 4], '-inf', arrival - stale * 1000)
  redis.call('ZADD', KEYS[i + 4], 'NX', arrival, holder)
  redis.call('PEXPIRE', KEYS[i + 4], stale)
  local free = max - tonumber(redis.call('GET', KEYS[i]) or '0') - redis.call('ZCARD', KEYS[i + 2])
  if redis.call('ZRANK', KEYS[i + 4], holder) >= free then
    granted = false
  end
end
if not granted then
  return {0, 0}
end
for i = 3, 4 do
  redis.call('ZADD', KEYS[i], now + lease, holder)
  redis.call('PEXPIRE', KEYS[i], lease)
  redis.call('ZREM', KEYS[i + 2], holder)
end
return {1, 0}
"""
# KEYS: the first four above; ARGV: window seconds, holder. The slot becomes a failure,
# in one step.
_FAIL = """
for i = 1, 2 do
  redis.call('ZREM', KEYS[i + 2], ARGV[2])
  redis.call('INCR', KEYS[i])
  if redis.call('TTL', KEYS[i]) < 0 then
    redis.call('EXPIRE', KEYS[i], ARGV[1])
  end
end
"""


class LoginThrottle:
    """At most `max_failures` wrong passwords per window for an account and for an
    address, even when the guesses arrive all at once, and never a refusal for correct
    logins that do.

    A password is checked only under a slot; there are `max_failures - failures` slots.
    A wrong password turns its slot into a failure, a right one gives it back. Parallel
    guesses therefore cannot check more than the remaining failures' worth of passwords,
    while parallel correct logins (CI runners sharing an account, several terminals)
    wait a moment for a free slot. (Counting attempts before checking them instead
    refused the right password whenever more than `max_failures` logins were in flight.)
    A success does not wipe the failures: guesses interleaved with the owner's logins
    stay counted. Slots are leases (`LEASE_SECONDS`), so a process killed mid-check
    does not hold one forever. Waiters get the slots in the order they arrived: asking
    again every few tens of milliseconds, whoever asked first after a slot was given back
    took it, and a few of 16 logins at once from one address waited 1.5 s while most
    waited 0.15 (p99 against p50)."""

    LEASE_SECONDS = 30
    WAIT_SECONDS = 15  # for a slot; beyond, 429
    POLL_SECONDS = 0.02
    # A waiter is dropped from the queue this long after it arrived (it gives up sooner),
    # so that one killed while waiting does not hold back the others for good.
    STALE_WAITER_MS = (WAIT_SECONDS + 5) * 1000

    def __init__(self, connection, address, email, max_failures, window_seconds):
        self.redis = connection
        self.keys = [f"aisystant:login-failures:address:{address}",
                     f"aisystant:login-failures:account:{email.lower()}",
                     f"aisystant:login-slots:address:{address}",
                     f"aisystant:login-slots:account:{email.lower()}",
                     f"aisystant:login-waiting:address:{address}",
                     f"aisystant:login-waiting:account:{email.lower()}"]
        self.max_failures, self.window = max_failures, window_seconds
        self.holder = uuid.uuid4().hex

    def check(self, verify):
        """`verify()` under a slot, and its result; a None result is a failure. 429
        (`RateLimited`) when the failures are used up, or no slot frees in time."""
        self._take_slot()
        try:
            user = verify()
        except BaseException:
            self._give_back()
            raise
        if user is None:
            self.redis.eval(_FAIL, 4, *self.keys[:4], self.window, self.holder)
        else:
            self._give_back()
        return user

    def _give_back(self):
        self.redis.pipeline().zrem(self.keys[2], self.holder).zrem(self.keys[3], self.holder).execute()

    def _take_slot(self):
        deadline = time.monotonic() + self.WAIT_SECONDS
        try:
            while True:
                taken, pttl = self.redis.eval(_TAKE_SLOT, 6, *self.keys, self.max_failures,
                                              self.LEASE_SECONDS * 1000, self.holder, self.STALE_WAITER_MS)
                if taken == 1:
                    return
                if taken == -1:
                    raise RateLimited(-(-max(pttl, 1) // 1000), "login_throttled")
                if time.monotonic() > deadline:
                    raise RateLimited(1, "login_throttled")
                time.sleep(self.POLL_SECONDS * (1 + random.random()))
        except BaseException:
            self._leave_queues()
            raise

    def _leave_queues(self):
        try:
            self.redis.pipeline().zrem(self.keys[4], self.holder).zrem(self.keys[5], self.holder).execute()
        except redis.RedisError:
            pass  # a waiter that stops asking is dropped after STALE_WAITER_MS


def login_throttle(request, email):
    settings = request.registry.settings
    return LoginThrottle(request.redis, client_address(request), email,
                         settings["login.max_failures"], settings["login.window_seconds"])


def includeme(config):
    config.add_tween("aisystant_server.ratelimit.ratelimit_tween_factory", under=EXCVIEW)
