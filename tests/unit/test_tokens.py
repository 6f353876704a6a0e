import time
import types
import uuid

import fakeredis
import jwt
import pytest

from aisystant_server.security import REVOKED_KEY, TokenService

SECRET = "unit-tests-secret-" + "s" * 50


@pytest.fixture
def tokens():
    return TokenService(SECRET, 3600, fakeredis.FakeRedis())


def forged(secret=SECRET, algorithm="HS256", **claims):
    payload = {"sub": "7", "jti": uuid.uuid4().hex, "iat": int(time.time()), "exp": int(time.time()) + 60, **claims}
    return jwt.encode({name: value for name, value in payload.items() if value is not None}, secret,
                      algorithm=algorithm)


def test_an_issued_token_decodes_to_its_claims(tokens):
    claims = tokens.decode(tokens.issue(types.SimpleNamespace(id=7)))
    assert claims["sub"] == "7" and claims["jti"] and claims["exp"] > time.time()


@pytest.mark.parametrize("token", [
    forged(exp=None),
    forged(jti=None),
    forged(jti=""),
    forged(sub=None),
    forged(exp=int(time.time()) - 5),
    forged(secret="another-secret-" + "o" * 40),
    forged(algorithm="HS512"),
    forged()[:-2] + "xx",
    "not.a.token",
    "",
], ids=["no-exp", "no-jti", "empty-jti", "no-sub", "expired", "other-secret", "hs512", "tampered", "garbage",
        "empty"])
def test_a_token_that_is_not_ours_or_not_valid_decodes_to_nothing(tokens, token):
    assert tokens.decode(token) is None


def test_a_revoked_token_decodes_to_nothing(tokens):
    token = tokens.issue(types.SimpleNamespace(id=7))
    tokens._redis.set(REVOKED_KEY.format(tokens.decode(token)["jti"]), 1)
    assert tokens.decode(token) is None


def test_a_token_verified_before_is_refused_once_it_has_expired(tokens):
    exp = int(time.time()) + 2
    token = forged(exp=exp)
    assert tokens.decode(token)["exp"] == exp  # verified, and kept as such
    time.sleep(max(0.0, exp - time.time()) + 0.05)
    assert tokens.decode(token) is None
