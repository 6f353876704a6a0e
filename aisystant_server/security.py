"""Authentication: JWT bearer tokens (pyramid-jwt) inside a Pyramid 2 security policy.

pyramid-jwt still speaks Pyramid's deprecated authentication-policy API, so it is not
`include`d: its policy only encodes and decodes tokens (HS256 pinned, so `alg: none` and
other algorithms are refused), and `SecurityPolicy` below answers Pyramid 2's questions.
Logout revokes a token by its `jti` in Redis until the token would have expired anyway.
Passwords: argon2id for new hashes; the original product's bcrypt hashes still verify
and are rehashed on the next successful login.
"""

import logging
import time
import uuid

from passlib.context import CryptContext
from pyramid.authorization import ACLHelper, Authenticated, Everyone
from pyramid_jwt.policy import JWTAuthenticationPolicy

from aisystant_server.models import User

log = logging.getLogger(__name__)

passwords = CryptContext(schemes=["argon2", "bcrypt"], deprecated="auto")
# Verified against when the email is unknown, so a miss costs the same time as a hit.
_DUMMY_HASH = passwords.hash("not a real password")
REVOKED_KEY = "aisystant:revoked:{}"


def hash_password(password):
    return passwords.hash(password)


def verify_password(password, stored_hash):
    """(valid, new_hash): `new_hash` is set when the stored hash should be upgraded."""
    if stored_hash is None:
        passwords.verify(password, _DUMMY_HASH)
        return False, None
    try:
        if stored_hash.startswith("$2"):
            # The original product's bcrypt silently used a password's first 72 bytes;
            # bcrypt 5 refuses longer ones. Verify what the original verified, and
            # rehash the whole password (with argon2id) for the logins to come.
            valid = passwords.verify(password.encode("utf-8")[:72], stored_hash)
            return valid, (hash_password(password) if valid else None)
        return passwords.verify_and_update(password, stored_hash)
    except (ValueError, TypeError):
        log.warning("unreadable password hash; login refused")
        return False, None


class TokenService:
    def __init__(self, secret, expires_in):
        self.expires_in = expires_in
        self._jwt = JWTAuthenticationPolicy(
            private_key=secret, algorithm="HS256", expiration=expires_in, auth_type="Bearer"
        )

    def issue(self, user):
        return self._jwt.create_token(str(user.id), jti=uuid.uuid4().hex)

    def claims(self, request):
        """The valid claims of the request's token, or {} (no token, bad, expired...)."""
        token = _query_token(request)
        if token:
            return self._jwt.jwt_decode(request, token)
        return self._jwt.get_claims(request)


def _query_token(request):
    # Browsers' EventSource cannot send headers: the stream endpoint takes `?token=`.
    if request.method == "GET" and request.path.endswith("/stream") and request.authorization is None:
        return request.GET.get("token")
    return None


def presented_credentials(request):
    try:
        return request.authorization is not None or bool(_query_token(request))
    except ValueError:
        return True


def revoke(request, claims):
    ttl = int(claims.get("exp", time.time() + 1) - time.time())
    if ttl > 0:
        request.redis.set(REVOKED_KEY.format(claims["jti"]), 1, ex=ttl)


def is_revoked(redis, claims):
    jti = claims.get("jti")
    return not jti or bool(redis.exists(REVOKED_KEY.format(jti)))


def authenticated_user(request):
    """The user of a valid, unrevoked token, or None (reified: one lookup a request)."""
    claims = request.jwt_claims
    subject = claims.get("sub")
    if not subject or not str(subject).isdigit() or is_revoked(request.redis, claims):
        return None
    return request.db.get(User, int(subject))


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
    tokens = TokenService(settings["jwt.secret"], settings["jwt.expires_in"])
    config.registry["tokens"] = tokens
    config.add_request_method(lambda request: tokens.claims(request), "jwt_claims", reify=True)
    config.add_request_method(authenticated_user, "authenticated_user", reify=True)
    config.set_security_policy(SecurityPolicy(tokens))
