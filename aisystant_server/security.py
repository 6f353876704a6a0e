"""Authentication: JWT bearer tokens (pyramid-jwt) inside a Pyramid 2 security policy.

pyramid-jwt still speaks Pyramid's deprecated authentication-policy API, so it is not
`include`d: it only issues tokens. Reading them is ours (`TokenService.decode`), because
its reader accepts a token without `exp` and only the exact spelling `Bearer`: we pin
HS256 (so `alg: none` and other algorithms are refused), require `exp`, `sub` and `jti`,
and take the scheme in any case, as HTTP says. `SecurityPolicy` below answers Pyramid 2's
questions. Logout revokes a token by its `jti` in Redis until the token would have
expired anyway.

Passwords: argon2id for new hashes; the original product's bcrypt hashes still verify
and are rehashed on the next successful login. Hashing costs ~25 ms of CPU: under
gevent it runs in a thread pool (argon2-cffi and bcrypt release the GIL), or every other
request of the process would wait for it.
"""

import logging
import os
import time
import uuid

import jwt
import sqlalchemy as sa
from gevent import monkey
from passlib.context import CryptContext
from pyramid.authorization import ACLHelper, Authenticated, Everyone
from pyramid_jwt.policy import JWTAuthenticationPolicy

from aisystant_server.db import record
from aisystant_server.models import User
from aisystant_server.resources import parse_id

log = logging.getLogger(__name__)

# argon2id at OWASP's recommended minimum (19 MiB, 2 passes, 1 lane): ~25 ms of CPU a
# hash here, where passlib's defaults (64 MiB, 3 passes, 4 lanes) took ~250 ms and capped
# logins at 7 a second on two cores. Hashes made with other parameters are redone at the
# next login.
passwords = CryptContext(schemes=["argon2", "bcrypt"], deprecated="auto", argon2__type="ID",
                         argon2__memory_cost=19_456, argon2__time_cost=2, argon2__parallelism=1)
# Verified against when the email is unknown, so a miss costs the same time as a hit.
_DUMMY_HASH = passwords.hash("not a real password")
REVOKED_KEY = "aisystant:revoked:{}"
# environ key of whether the request's token is revoked, as the rate limit's round trip
# found it (for the same `verified_claims`)
REVOCATION_LOOKUP = "aisystant.revocation"
ALGORITHM = "HS256"
REQUIRED_CLAIMS = ["exp", "sub", "jti"]


_hashing_threads = None


def off_the_loop(function, *args):
    """`function(*args)`, in a thread pool when this process runs on gevent (the server
    and the worker patch the standard library), so the event loop keeps serving other
    requests meanwhile; called directly otherwise (tests, waitress). One thread per core:
    more would not hash faster, and each argon2id hash holds 19 MiB while it runs."""
    global _hashing_threads
    if not monkey.is_module_patched("threading"):
        return function(*args)
    if _hashing_threads is None:
        from gevent.threadpool import ThreadPool

        _hashing_threads = ThreadPool(os.cpu_count() or 1)
    return _hashing_threads.apply(function, args)


def hash_password(password):
    return off_the_loop(passwords.hash, password)


def verify_password(password, stored_hash):
    """(valid, new_hash): `new_hash` is set when the stored hash should be upgraded."""
    return off_the_loop(_verify, password, stored_hash)


def _verify(password, stored_hash):
    if stored_hash is None:
        passwords.verify(password, _DUMMY_HASH)
        return False, None
    try:
        if stored_hash.startswith("$2"):
            # The original product's bcrypt silently used a password's first 72 bytes;
            # bcrypt 5 refuses longer ones. Verify what the original verified, and
            # rehash the whole password (with argon2id) for the logins to come.
            valid = passwords.verify(password.encode("utf-8")[:72], stored_hash)
            return valid, (passwords.hash(password) if valid else None)
        return passwords.verify_and_update(password, stored_hash)
    except (ValueError, TypeError):
        log.warning("unreadable password hash; login refused")
        return False, None


# Tokens whose signature and claims were checked, by their text: a client sends the same
# token with every request, and checking it again was 5 % of a read's CPU. Only the
# expiry can change: it is checked at every use (revocation is looked up every time too).
VERIFIED_KEPT = 10_000


class TokenService:
    def __init__(self, secret, expires_in, redis):
        self.expires_in = expires_in
        self._secret, self._redis = secret, redis
        self._verified = {}
        self._jwt = JWTAuthenticationPolicy(
            private_key=secret, algorithm=ALGORITHM, expiration=expires_in, auth_type="Bearer"
        )

    def issue(self, user):
        return self._jwt.create_token(str(user.id), jti=uuid.uuid4().hex)

    def verify(self, token):
        """The claims of `token` if it is one of ours and unexpired, revoked or not; else None."""
        kept = self._verified.get(token)
        if kept is not None and kept[0] > time.time():  # PyJWT's test, with no leeway
            return kept[1]
        try:
            claims = jwt.decode(token, self._secret, algorithms=[ALGORITHM],
                                options={"require": REQUIRED_CLAIMS})
        except jwt.InvalidTokenError as error:
            log.info("refused token: %s", error)
            self._verified.pop(token, None)
            return None
        if not (isinstance(claims["jti"], str) and claims["jti"]):
            return None
        if len(self._verified) >= VERIFIED_KEPT:
            self._verified.clear()
        self._verified[token] = (int(claims["exp"]), claims)
        return claims

    def decode(self, token):
        """The claims of `token` if it is one of ours, unexpired and not revoked; else
        None. Needs no request (the Socket.IO handshake uses it); a Redis outage
        raises `redis.RedisError` rather than passing for "not revoked"."""
        claims = self.verify(token)
        return None if claims is None or is_revoked(self._redis, claims) else claims

    def claims(self, request):
        """The valid claims of the request's token, or {} (no token, bad, expired...).
        Its revocation was looked up in the rate limit's round trip, when the rate limit
        ran (ratelimit.py); otherwise here."""
        claims = request.verified_claims
        if claims is None:
            return {}
        revoked = request.environ.get(REVOCATION_LOOKUP)
        if revoked is None:
            revoked = is_revoked(self._redis, claims)
        return {} if revoked else claims


def presented_token(request):
    """The token of `Authorization: Bearer <token>` (the scheme in any case), or of the
    stream endpoint's `?token=` (browsers' EventSource cannot send headers); None if
    there is none, or the header holds another scheme."""
    header = request.headers.get("Authorization")
    if header is None:
        if request.method == "GET" and request.path_info.endswith("/stream"):
            return request.GET.get("token") or None
        return None
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def _verified_claims(tokens, request):
    token = presented_token(request)
    return tokens.verify(token) if token else None


def presented_credentials(request):
    """Whether the request tried to authenticate (to tell "invalid token" from "none")."""
    return "Authorization" in request.headers or presented_token(request) is not None


def revoke(request, claims):
    ttl = int(claims.get("exp", time.time() + 1) - time.time())
    if ttl > 0:
        request.redis.set(REVOKED_KEY.format(claims["jti"]), 1, ex=ttl)


def is_revoked(redis, claims):
    jti = claims.get("jti")
    return not jti or bool(redis.exists(REVOKED_KEY.format(jti)))


# Built once: the identity lookup is paid by every authenticated request.
_USER = sa.select(User.id, User.username, User.email, User.avatar_url, User.role, User.created_at).where(
    User.id == sa.bindparam("p_id"))


class Accounts:
    """The account a token names, kept `seconds` in this process after it was read.

    Every authenticated request needs its account; reading it each time was a fifth of
    a REST read's CPU. No part of the product changes or deletes an account once it is
    registered, so a kept row is the row; an account removed from the database by hand
    is refused within `seconds` (`ACCOUNT_CACHE_SECONDS`; 0 reads it every time). Misses
    are never kept. The registry holds one: each app (and each test's app) its own."""

    MAX_KEPT = 10_000

    def __init__(self, seconds):
        self.seconds = seconds
        self._kept = {}  # user id -> (monotonic expiry, row)

    def of(self, db, claims):
        """The user that decoded token `claims` name, or None."""
        try:
            user_id = parse_id(str((claims or {}).get("sub") or ""))
        except KeyError:  # not an id that a row could have
            return None
        now = time.monotonic()
        kept = self._kept.get(user_id)
        if kept is not None and kept[0] > now:
            return kept[1]
        user = record(db, _USER, {"p_id": user_id})
        if user is None:
            self._kept.pop(user_id, None)
            return None
        if len(self._kept) >= self.MAX_KEPT:
            self._kept.clear()
        self._kept[user_id] = (now + self.seconds, user)
        return user


def authenticated_user(request):
    """The user of a valid, unrevoked token, or None (reified: one lookup a request)."""
    return request.registry["accounts"].of(request.db, request.jwt_claims)


class SecurityPolicy:
    def __init__(self, tokens):
        self.tokens = tokens
        self.acl = ACLHelper()

    def identity(self, request):
        # Pyramid 2 asks the policy at every `request.identity`: answer from the
        # request's one lookup.
        return request.authenticated_user

    def authenticated_userid(self, request):
        user = request.identity
        return None if user is None else str(user.id)

    def principals(self, request):
        user = request.identity
        if user is None:
            return [Everyone]
        return [Everyone, Authenticated, f"user:{user.id}", f"role:{user.role}"]

    def permits(self, request, context, permission):
        return self.acl.permits(context, self.principals(request), permission)

    def remember(self, request, userid, **kw):
        return []

    def forget(self, request, **kw):
        return []


def includeme(config):
    settings = config.get_settings()
    tokens = TokenService(settings["jwt.secret"], settings["jwt.expires_in"], config.registry["redis"])
    config.registry["tokens"] = tokens
    config.registry["accounts"] = Accounts(settings["auth.account_cache_seconds"])
    config.add_request_method(lambda request: _verified_claims(tokens, request), "verified_claims", reify=True)
    config.add_request_method(lambda request: tokens.claims(request), "jwt_claims", reify=True)
    config.add_request_method(authenticated_user, "authenticated_user", reify=True)
    config.set_security_policy(SecurityPolicy(tokens))
