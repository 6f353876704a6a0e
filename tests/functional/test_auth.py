import time
import uuid

import jwt
import pytest
import sqlalchemy as sa

from tests.functional.conftest import TEST_JWT_SECRET, register


def assert_error(response, status, code):
    assert response.status_int == status
    assert response.content_type == "application/json"
    body = response.json
    assert body["success"] is False
    assert body["code"] == code
    assert body["message"]
    return body


def test_register_returns_user_and_token(testapp):
    response = testapp.post_json("/api/auth/register", {
        "username": "alice.ops", "email": "Alice@Example.com", "password": "s3cret-password",
        "avatar_url": "https://example.com/a.png",
    }, status=201)
    data = response.json["data"]
    assert data["user"] == {"id": data["user"]["id"], "username": "alice.ops", "email": "alice@example.com",
                            "avatar_url": "https://example.com/a.png", "role": "user"}
    me = testapp.get("/api/auth/me", headers={"Authorization": f"Bearer {data['token']}"}).json["data"]
    assert me["username"] == "alice.ops"
    assert me["created_at"].endswith("Z")


def test_login_with_right_password_gives_a_working_token(testapp, account):
    response = testapp.post_json("/api/auth/login", {"email": account.email.upper(), "password": account.password})
    data = response.json["data"]
    assert data["user"]["id"] == account.id
    me = testapp.get("/api/auth/me", headers={"Authorization": f"Bearer {data['token']}"})
    assert me.json["data"]["email"] == account.email


def test_wrong_password_and_unknown_email_get_the_same_401(testapp, account):
    wrong = testapp.post_json("/api/auth/login", {"email": account.email, "password": "wrong password"}, status=401)
    unknown = testapp.post_json("/api/auth/login", {"email": "nobody@example.com", "password": "whatever1"}, status=401)
    assert assert_error(wrong, 401, "invalid_credentials")["message"] == unknown.json["message"]


def test_messages_follow_accept_language(testapp, account):
    french = testapp.post_json("/api/auth/login", {"email": account.email, "password": "nope"}, status=401)
    english = testapp.post_json("/api/auth/login", {"email": account.email, "password": "nope"}, status=401,
                                headers={"Accept-Language": "en-US,en;q=0.9"})
    assert french.json["message"] == "Email ou mot de passe incorrect."
    assert english.json["message"] == "Incorrect email or password."
    assert french.json["code"] == english.json["code"] == "invalid_credentials"


def test_logout_revokes_the_token_at_once(testapp, account):
    testapp.post("/api/auth/logout", headers=account.headers, status=200)
    response = testapp.get("/api/auth/me", headers=account.headers, status=401)
    assert_error(response, 401, "unauthorized")
    other_token = testapp.post_json("/api/auth/login", {"email": account.email, "password": account.password}).json
    testapp.get("/api/auth/me", headers={"Authorization": f"Bearer {other_token['data']['token']}"}, status=200)


@pytest.mark.parametrize("field, value, problem", [
    ("username", None, "missing"),
    ("username", "ab", "too short"),
    ("username", "a" * 51, "too long"),
    ("username", "bad name", "space"),
    ("username", "   ", "blank"),
    ("username", 12345, "number"),
    ("username", "évé", "non-ascii letters"),
    ("username", "ab\u202ecd", "bidi override"),
    ("email", None, "missing"),
    ("email", 42, "number"),
    ("email", ["a@b.co"], "list"),
    ("email", "not-an-email", "invalid"),
    ("email", "", "empty"),
    ("email", "a" * 95 + "@x.com", "too long"),
    ("password", None, "missing"),
    ("password", "short", "too short"),
    ("password", 12345678, "number"),
    ("password", "x" * 2000, "too long"),
    ("avatar_url", "javascript:alert(1)", "not http"),
    ("avatar_url", "https://e.com/" + "a" * 250, "too long"),
])
def test_register_rejects_bad_field_naming_it(testapp, field, value, problem):
    body = {"username": "valid_user", "email": "valid@example.com", "password": "long enough"}
    if value is None:
        del body[field]
    else:
        body[field] = value
    response = testapp.post_json("/api/auth/register", body, status=400)
    assert field in assert_error(response, 400, "validation_failed")["details"]
    assert testapp.post_json("/api/auth/login", {"email": "valid@example.com", "password": "long enough"},
                             status=401)


@pytest.mark.parametrize("field", ["username", "email", "password"])
def test_nul_bytes_are_refused_in_every_text_field(testapp, field):
    body = {"username": "valid_user", "email": "valid@example.com", "password": "long enough"}
    body[field] = body[field][:3] + "\x00" + body[field][3:]
    response = testapp.post_json("/api/auth/register", body, status=400)
    assert field in assert_error(response, 400, "validation_failed")["details"]


def test_lone_surrogate_is_refused_not_a_500(testapp):
    raw = b'{"username": "valid_user", "email": "valid@example.com", "password": "long \\ud800 enough"}'
    response = testapp.post("/api/auth/register", raw, content_type="application/json", status=400)
    assert "password" in assert_error(response, 400, "validation_failed")["details"]


@pytest.mark.parametrize("field", ["email", "username"])
def test_duplicate_email_or_username_is_a_409_naming_the_field(testapp, account, field):
    body = {"username": f"fresh_{uuid.uuid4().hex[:8]}", "email": f"fresh_{uuid.uuid4().hex[:8]}@example.com",
            "password": "long enough"}
    body[field] = account.user[field].upper()
    response = testapp.post_json("/api/auth/register", body, status=409)
    assert list(assert_error(response, 409, "conflict")["details"]) == [field]


def test_login_rejects_missing_fields(testapp):
    response = testapp.post_json("/api/auth/login", {"email": "a@b.co"}, status=400)
    assert "password" in assert_error(response, 400, "validation_failed")["details"]


def test_repeated_failures_for_one_account_are_throttled_even_with_the_right_password(testapp, account):
    for attempt in range(5):
        testapp.post_json("/api/auth/login", {"email": account.email, "password": f"wrong {attempt}"}, status=401,
                          extra_environ={"REMOTE_ADDR": f"198.51.100.{attempt}"})
    response = testapp.post_json("/api/auth/login", {"email": account.email, "password": account.password},
                                 status=429, extra_environ={"REMOTE_ADDR": "198.51.100.99"})
    assert_error(response, 429, "rate_limited")
    assert 0 < int(response.headers["Retry-After"]) <= 15 * 60


def test_repeated_failures_from_one_address_are_throttled_across_accounts(testapp, account):
    for attempt in range(5):
        testapp.post_json("/api/auth/login", {"email": f"guess{attempt}@example.com", "password": "wrong pass"},
                          status=401)
    response = testapp.post_json("/api/auth/login", {"email": account.email, "password": account.password},
                                 status=429)
    assert_error(response, 429, "rate_limited")


def test_parallel_guesses_cannot_all_pass_the_login_throttle(testapp, account):
    import concurrent.futures

    def guess(attempt):
        return testapp.post_json("/api/auth/login", {"email": account.email, "password": f"guess {attempt}"},
                                 status="*", extra_environ={"REMOTE_ADDR": f"198.51.100.{attempt}"}).status_int

    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        statuses = list(pool.map(guess, range(10)))
    assert statuses.count(401) == 5 and statuses.count(429) == 5


def test_successful_logins_from_one_address_are_not_throttled(testapp, account):
    for _ in range(8):
        testapp.post_json("/api/auth/login", {"email": account.email, "password": account.password}, status=200)


def test_forged_forwarded_for_headers_do_not_escape_the_login_throttle(testapp):
    for attempt in range(5):
        testapp.post_json("/api/auth/login", {"email": f"guess{attempt}@example.com", "password": "wrong pass"},
                          headers={"X-Forwarded-For": f"192.0.2.{attempt}"}, status=401)
    testapp.post_json("/api/auth/login", {"email": "guess9@example.com", "password": "wrong pass"},
                      headers={"X-Forwarded-For": "192.0.2.200"}, status=429)


def test_behind_a_trusted_proxy_the_address_our_proxy_saw_is_the_client(make_app):
    testapp = make_app(**{"aisystant.trust_proxy": "true"})
    for attempt in range(5):
        testapp.post_json("/api/auth/login", {"email": f"guess{attempt}@example.com", "password": "wrong pass"},
                          headers={"X-Forwarded-For": f"10.9.9.{attempt}, 192.0.2.1"}, status=401)
    testapp.post_json("/api/auth/login", {"email": "guess9@example.com", "password": "wrong pass"},
                      headers={"X-Forwarded-For": "10.9.9.99, 192.0.2.1"}, status=429)
    testapp.post_json("/api/auth/login", {"email": "guess9@example.com", "password": "wrong pass"},
                      headers={"X-Forwarded-For": "192.0.2.2"}, status=401)


def _token(secret=TEST_JWT_SECRET, algorithm="HS256", **claims):
    payload = {"sub": "1", "jti": uuid.uuid4().hex, "iat": int(time.time()), "exp": int(time.time()) + 3600}
    payload.update(claims)
    return jwt.encode({name: value for name, value in payload.items() if value is not None}, secret,
                      algorithm=algorithm)


def _unsigned_token(sub):
    import base64
    import json

    def part(value):
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part({'sub': sub, 'jti': 'x', 'exp': int(time.time()) + 99})}."


@pytest.mark.parametrize("make_header", [
    lambda account: "Bearer garbage",
    lambda account: "Bearer " + "a.b.c",
    lambda account: "Basic dXNlcjpwYXNz",
    lambda account: "Bearer",
    lambda account: "Bearer " + _token(sub=str(account.id), exp=int(time.time()) - 10),
    lambda account: "Bearer " + _token(secret="another-secret-" + "y" * 40, sub=str(account.id)),
    lambda account: "Bearer " + _unsigned_token(str(account.id)),
    lambda account: "Bearer " + _token(sub=str(account.id), jti=None),
    lambda account: "Bearer " + _token(sub="999999"),
    lambda account: "Bearer " + _token(sub="not-a-number"),
    lambda account: "Bearer " + _token(sub="9" * 30),
    lambda account: "Bearer " + _token(sub=str(account.id), exp=None),
    lambda account: "Bearer " + _token(sub=None),
    lambda account: "Bearer " + _token(algorithm="HS512", sub=str(account.id)),
], ids=["garbage", "three-dots", "basic", "empty-bearer", "expired", "other-secret", "alg-none", "no-jti",
        "unknown-user", "bad-subject", "huge-subject", "no-exp", "no-subject", "other-algorithm"])
def test_bad_tokens_get_401_in_the_envelope(testapp, account, make_header):
    response = testapp.get("/api/auth/me", headers={"Authorization": make_header(account)}, status=401)
    assert_error(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"] == "Bearer"


def test_a_valid_token_we_did_not_issue_is_still_accepted_when_signed_right(testapp, account):
    token = _token(sub=str(account.id))
    assert testapp.get("/api/auth/me", headers={"Authorization": f"Bearer {token}"}).json["data"]["id"] == account.id


def test_no_token_says_authentication_is_required(testapp):
    response = testapp.get("/api/auth/me", headers={"Accept-Language": "en"}, status=401)
    assert assert_error(response, 401, "unauthorized")["message"] == "Authentication required."


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "Bearer"])
def test_the_bearer_scheme_is_accepted_in_any_case(testapp, account, scheme):
    response = testapp.get("/api/auth/me", headers={"Authorization": f"{scheme} {account.token}"})
    assert response.json["data"]["id"] == account.id


def test_the_stream_endpoint_takes_the_token_as_a_query_parameter(testapp, account):
    conversation = testapp.post_json("/api/chat/conversations", {}, headers=account.headers, status=201).json
    path = f"/api/chat/conversations/{conversation['data']['id']}/messages/999/stream"
    assert_error(testapp.get(path, status=401), 401, "unauthorized")
    assert_error(testapp.get(path, {"token": account.token}, status=404), 404, "not_found")


def test_a_token_that_logout_revoked_is_refused_by_the_request_free_decoder(testapp, account):
    tokens = testapp.app.registry["tokens"]
    assert tokens.decode(account.token)["sub"] == str(account.id)
    testapp.post("/api/auth/logout", headers=account.headers, status=200)
    assert tokens.decode(account.token) is None


def _delete_account_by_hand(database_url, user_id):
    engine = sa.create_engine(database_url)
    with engine.begin() as connection:
        connection.execute(sa.text("DELETE FROM users WHERE id = :id"), {"id": user_id})
    engine.dispose()


def test_a_token_whose_account_was_removed_by_hand_is_refused(make_app, database_url):
    testapp = make_app(**{"auth.account_cache_seconds": 0})
    account = register(testapp)
    testapp.get("/api/auth/me", headers=account.headers, status=200)
    _delete_account_by_hand(database_url, account.id)
    assert_error(testapp.get("/api/auth/me", headers=account.headers, status=401), 401, "unauthorized")


def test_a_kept_account_is_read_again_once_its_time_is_up(make_app, database_url):
    # README: an account removed from the database by hand is refused within ACCOUNT_CACHE_SECONDS.
    testapp = make_app(**{"auth.account_cache_seconds": 0.5})
    account = register(testapp)
    testapp.get("/api/auth/me", headers=account.headers, status=200)
    _delete_account_by_hand(database_url, account.id)
    time.sleep(0.6)
    assert_error(testapp.get("/api/auth/me", headers=account.headers, status=401), 401, "unauthorized")
