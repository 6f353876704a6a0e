import io

import pytest

from tests.functional.test_auth import assert_error


def test_unknown_route_is_a_json_404(testapp):
    assert_error(testapp.get("/api/nothing-here", status=404), 404, "not_found")
    assert_error(testapp.get("/favicon.ico", status=404), 404, "not_found")


@pytest.mark.parametrize("method, path", [
    ("PATCH", "/api/chat/conversations"),
    ("DELETE", "/api/chat/conversations"),
    ("GET", "/api/auth/login"),
    ("PUT", "/api/auth/register"),
])
def test_wrong_method_is_a_json_405(testapp, account, method, path):
    response = testapp.request(path, method=method, headers=account.headers, status=405)
    assert_error(response, 405, "method_not_allowed")


def test_405_says_which_methods_the_resource_allows(testapp, account):
    conversation = testapp.post_json("/api/chat/conversations", {}, headers=account.headers, status=201).json
    allowed = {
        "/api/auth/login": "POST",
        "/api/auth/me": "GET, HEAD",
        "/api/chat/conversations": "GET, HEAD, POST",
        f"/api/chat/conversations/{conversation['data']['id']}": "DELETE, GET, HEAD, PUT",
    }
    for path, methods in allowed.items():
        response = testapp.request(path, method="PATCH", headers=account.headers, status=405)
        assert response.headers["Allow"] == methods, path


@pytest.mark.parametrize("body", [b"{not json", b"\xff\xfe garbage", b'{"a": 1', b"nan"])
def test_malformed_json_is_a_400(testapp, body):
    response = testapp.post("/api/auth/register", body, content_type="application/json", status=400)
    assert_error(response, 400, "validation_failed")


@pytest.mark.parametrize("body", [b"[" * 3000 + b"]" * 3000, b'{"a": ' + b"[" * 3000 + b"]" * 3000 + b"}"],
                         ids=["deep-array", "deep-in-object"])
def test_absurdly_nested_json_is_a_400_not_a_500(testapp, body):
    response = testapp.post("/api/auth/login", body, content_type="application/json", status=400)
    assert_error(response, 400, "validation_failed")


def test_fields_the_api_does_not_know_are_ignored_whatever_they_hold(testapp, account):
    # A newer client's extra fields must not fail a request: not even a NUL or a lone
    # surrogate, which a field the API stores would refuse.
    deep = ["x"]
    for _ in range(900):
        deep = [deep]
    extra = {"client": {"note": "nul\x00byte", "lone": "\ud800", "deep": deep}, "nul\x00key": 1}
    login = {"email": account.email, "password": account.password, **extra}
    assert testapp.post_json("/api/auth/login", login).json["success"] is True
    created = testapp.post_json("/api/chat/conversations", {"title": "kept", **extra}, headers=account.headers,
                                status=201).json["data"]
    assert created["title"] == "kept"


@pytest.mark.parametrize("body", [b"[]", b'"text"', b"42", b"null", b"true"])
def test_json_that_is_not_an_object_is_a_400(testapp, body):
    response = testapp.post("/api/auth/register", body, content_type="application/json", status=400)
    assert_error(response, 400, "validation_failed")


@pytest.mark.parametrize("content_type", ["APPLICATION/JSON", "Application/Json; charset=UTF-8"])
def test_media_types_are_case_insensitive(testapp, content_type):
    body = b'{"email": "nobody@example.com", "password": "long enough"}'
    response = testapp.post("/api/auth/login", body, content_type=content_type, status=401)
    assert_error(response, 401, "invalid_credentials")


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"])
def test_wrong_content_type_is_a_415(testapp, content_type):
    response = testapp.post("/api/auth/register", b'{"username": "a"}', content_type=content_type, status=415)
    assert_error(response, 415, "unsupported_media_type")


def test_body_over_the_cap_is_a_413_before_parsing(make_app, account):
    testapp = make_app(**{"aisystant.max_body_bytes": "2048"})
    body = b'{"title": "' + b"x" * 4096 + b'"}'
    response = testapp.post("/api/chat/conversations", body, content_type="application/json",
                            headers=account.headers, status=413)
    assert_error(response, 413, "payload_too_large")


def test_chunked_body_over_the_cap_is_a_413(make_app):
    testapp = make_app(**{"aisystant.max_body_bytes": "1024"})
    body = b'{"username": "' + b"x" * 4096 + b'"}'
    request = testapp.RequestClass.blank("/api/auth/register", method="POST", content_type="application/json")
    # As a WSGI server presents a chunked upload: no length, the input ends where the body does.
    request.environ.pop("CONTENT_LENGTH", None)
    request.environ.update({"wsgi.input": io.BytesIO(body), "wsgi.input_terminated": True,
                            "HTTP_TRANSFER_ENCODING": "chunked"})
    response = testapp.do_request(request, status=413)
    assert_error(response, 413, "payload_too_large")


def test_unexpected_failure_is_a_500_without_internals(make_app, tmp_path, caplog):
    broken = make_app(**{"sqlalchemy.url": f"sqlite:///{tmp_path}/never-migrated.sqlite3"})
    response = broken.post_json("/api/auth/register", {"username": "someone", "email": "s@example.com",
                                                       "password": "long enough"}, status=500)
    body = assert_error(response, 500, "internal_error")
    assert set(body) == {"success", "message", "code", "request_id"}
    assert "sqlite" not in response.text.lower() and "Traceback" not in response.text
    assert "no such table" in caplog.text


def test_security_headers_on_success_and_error(testapp):
    for response in (testapp.get("/"), testapp.get("/api/missing", status=404)):
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["Referrer-Policy"] == "no-referrer"


@pytest.mark.parametrize("origin", ["http://localhost:3000", "https://ops.example.com"])
def test_cors_allows_each_configured_origin_on_success_and_error(testapp, origin):
    for response in (testapp.get("/", headers={"Origin": origin}),
                     testapp.get("/api/auth/me", headers={"Origin": origin}, status=401)):
        assert response.headers["Access-Control-Allow-Origin"] == origin
        assert "Origin" in response.headers["Vary"]


def test_cors_ignores_other_origins(testapp):
    response = testapp.get("/", headers={"Origin": "https://evil.example.net"})
    assert "Access-Control-Allow-Origin" not in response.headers


@pytest.mark.parametrize("headers", [{"Origin": "https://evil.example.net"}, {}], ids=["refused", "no-origin"])
def test_answers_vary_on_origin_even_without_cors_headers(testapp, headers):
    # A shared cache must not serve this answer (no CORS headers) to an allowed origin.
    for response in (testapp.get("/", headers=headers), testapp.get("/api/auth/me", headers=headers, status=401)):
        assert "Origin" in response.headers["Vary"]


def test_cors_wildcard_allows_any_origin_without_credentials(make_app):
    testapp = make_app(**{"cors.origins": "*"})
    response = testapp.get("/", headers={"Origin": "https://anything.example.org"})
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Credentials" not in response.headers


def test_cors_preflight(testapp):
    response = testapp.options("/api/chat/conversations", headers={
        "Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"}, status=204)
    assert "POST" in response.headers["Access-Control-Allow-Methods"]
    assert "Authorization" in response.headers["Access-Control-Allow-Headers"]
    refused = testapp.options("/api/chat/conversations", headers={
        "Origin": "https://evil.example.net", "Access-Control-Request-Method": "POST"}, status=204)
    assert "Access-Control-Allow-Origin" not in refused.headers
    assert "Access-Control-Allow-Methods" not in refused.headers


def test_api_rate_limit_answers_429_in_the_envelope_with_headers(make_app):
    testapp = make_app(**{"ratelimit.max_requests": "3", "ratelimit.window_ms": "60000"})
    for remaining in (2, 1, 0):
        response = testapp.get("/api/auth/me", status=401)
        assert response.headers["RateLimit-Limit"] == "3"
        assert response.headers["RateLimit-Remaining"] == str(remaining)
    response = testapp.get("/api/chat/conversations", status=429)
    assert_error(response, 429, "rate_limited")
    assert 0 < int(response.headers["Retry-After"]) <= 60
    assert int(response.headers["RateLimit-Reset"]) <= 60
    other_client = testapp.get("/api/auth/me", status=401, extra_environ={"REMOTE_ADDR": "192.0.2.50"})
    assert other_client.headers["RateLimit-Remaining"] == "2"
    testapp.get("/api/health", status=200)
    # The counts leave Redis with their window, whoever made them.
    redis = testapp.app.registry["redis"]
    counters = list(redis.scan_iter("aisystant:ratelimit:*"))
    assert len(counters) == 2 and all(0 < redis.ttl(key) <= 60 for key in counters)


def test_root_names_the_api_and_its_version(testapp):
    body = testapp.get("/").json
    assert body["success"] is True
    assert body["message"].startswith("AiSystant API v")
    assert body["endpoints"]["auth"] == "/api/auth"


def test_health_reports_database_and_redis(testapp, backend):
    data = testapp.get("/api/health").json["data"]
    assert data["database"] == "ok"
    assert data["redis"] == ("ok" if backend == "postgresql" else "embedded")


def test_health_is_503_when_the_database_is_down(make_app):
    testapp = make_app(**{"sqlalchemy.url": "postgresql+psycopg2://postgres@127.0.0.1:1/none"})
    response = testapp.get("/api/health", status=503)
    assert_error(response, 503, "service_unavailable")
    assert response.json["data"]["database"] == "error"


def test_health_is_503_when_redis_is_down(make_app):
    testapp = make_app(**{"redis.url": "redis://127.0.0.1:1/0"})
    response = testapp.get("/api/health", status=503)
    assert response.json["data"]["redis"] == "error"


def test_api_keeps_answering_when_redis_rate_limit_is_down(make_app):
    testapp = make_app(**{"redis.url": "redis://127.0.0.1:1/0"})
    assert_error(testapp.get("/api/chat/conversations", status=401), 401, "unauthorized")


UNREACHABLE_DATABASE = "postgresql+psycopg2://postgres@127.0.0.1:1/none"


@pytest.mark.parametrize("call", [
    lambda app, account: app.get("/api/auth/me", headers=account.headers, status="*"),
    lambda app, account: app.post_json("/api/auth/login", {"email": account.email, "password": account.password},
                                       status="*"),
    lambda app, account: app.post_json("/api/auth/register", {
        "username": "outage", "email": "outage@example.com", "password": "long enough"}, status="*"),
    lambda app, account: app.get("/api/chat/conversations/1", headers=account.headers, status="*"),
], ids=["identity", "login", "register", "traversal"])
def test_an_unreachable_database_is_a_503_with_retry_after_not_a_500(make_app, account, call):
    response = call(make_app(**{"sqlalchemy.url": UNREACHABLE_DATABASE}), account)
    body = assert_error(response, 503, "service_unavailable")
    assert response.headers["Retry-After"] == "5"
    assert "psycopg2" not in response.text and "details" not in body


@pytest.mark.distributed
def test_a_connection_killed_while_idle_is_replaced_without_an_error(testapp, account, database_url):
    import sqlalchemy as sa

    from tests.functional.conftest import _admin_execute

    testapp.get("/api/auth/me", headers=account.headers)
    name = sa.engine.make_url(database_url).database
    _admin_execute(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")
    testapp.get("/api/auth/me", headers=account.headers, status=200)


def test_a_token_cannot_be_checked_without_redis_is_a_503_not_a_500(make_app, account):
    testapp = make_app(**{"redis.url": "redis://127.0.0.1:1/0"})
    response = testapp.get("/api/auth/me", headers=account.headers, status=503)
    assert_error(response, 503, "service_unavailable")
    assert response.headers["Retry-After"] == "5"
