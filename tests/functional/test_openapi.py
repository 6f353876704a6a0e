import itertools
import re

import jsonschema
import regress
from openapi_spec_validator import validate

from aisystant_server import resources
from tests.functional.conftest import register

# Where each traversal context sits under the `conversations` route.
CONTEXT_PATHS = {
    resources.ConversationsRoot: "/api/chat/conversations",
    resources.ConversationContext: "/api/chat/conversations/{id}",
    resources.MessagesContext: "/api/chat/conversations/{id}/messages",
    resources.MessageContext: "/api/chat/conversations/{id}/messages/{mid}",
}


def app_operations(app):
    """(path, method) of every view the app serves, from Pyramid's own introspection."""
    introspector = app.registry.introspector
    routes = {entry["introspectable"]["name"]: entry["introspectable"]["pattern"]
              for entry in introspector.get_category("routes")}
    operations = set()
    for entry in introspector.get_category("views"):
        view = entry["introspectable"]
        if view["route_name"] is None:
            continue
        if view["route_name"] == "conversations":
            path = CONTEXT_PATHS[view["context"]] + (f"/{view['name']}" if view["name"] else "")
        else:
            path = routes[view["route_name"]]
        methods = view["request_methods"] or ()
        for method in (methods,) if isinstance(methods, str) else methods:
            operations.add((path, method.lower()))
    return operations


def response_validator(document, path, method, status):
    responses = document["paths"][path][method]["responses"]
    key = str(status) if str(status) in responses else "default"
    pointer = "/".join(part.replace("~", "~0").replace("/", "~1")
                       for part in ["paths", path, method, "responses", key, "content", "application/json", "schema"])
    return jsonschema.Draft202012Validator({**document, "$ref": f"#/{pointer}"})


def test_document_is_valid_openapi_3_1(testapp):
    document = testapp.get("/api/openapi.json").json
    assert document["openapi"] == "3.1.0"
    validate(document)


def test_every_route_of_the_app_is_documented(testapp):
    document = testapp.get("/api/openapi.json").json
    documented = {(path, method) for path, item in document["paths"].items() for method in item
                  if method != "parameters"}
    served = app_operations(testapp.app)
    assert ("/api/chat/conversations/{id}", "put") in served
    assert served - documented == set()


def test_real_responses_validate_against_the_document(testapp):
    document = testapp.get("/api/openapi.json").json
    seen = []

    def check(method, path, response):
        response_validator(document, path, method, response.status_int).validate(response.json)
        seen.append((path, method, response.status_int))
        return response.json

    check("get", "/", testapp.get("/"))
    check("get", "/api/health", testapp.get("/api/health"))
    account = register(testapp)
    check("post", "/api/auth/register", testapp.post_json("/api/auth/register", {
        "username": "openapi_user", "email": "openapi@example.com", "password": "long enough"}, status=201))
    check("post", "/api/auth/register", testapp.post_json("/api/auth/register", {"username": "x"}, status=400))
    check("post", "/api/auth/login", testapp.post_json("/api/auth/login", {
        "email": account.email, "password": account.password}))
    check("post", "/api/auth/login", testapp.post_json("/api/auth/login", {
        "email": account.email, "password": "wrong"}, status=401))
    check("get", "/api/auth/me", testapp.get("/api/auth/me", headers=account.headers))
    created = check("post", "/api/chat/conversations", testapp.post_json(
        "/api/chat/conversations", {"title": "documented"}, headers=account.headers, status=201))
    check("get", "/api/chat/conversations", testapp.get("/api/chat/conversations", headers=account.headers))
    path = f"/api/chat/conversations/{created['data']['id']}"
    check("get", "/api/chat/conversations/{id}", testapp.get(path, headers=account.headers))
    check("put", "/api/chat/conversations/{id}", testapp.put_json(path, {"title": "t"}, headers=account.headers))
    check("delete", "/api/chat/conversations/{id}", testapp.delete(path, headers=account.headers))
    check("get", "/api/chat/conversations/{id}", testapp.get(path, headers=account.headers, status=404))
    other = check("post", "/api/chat/conversations", testapp.post_json(
        "/api/chat/conversations", {}, headers=account.headers, status=201))["data"]["id"]
    check("post", "/api/chat/conversations/{id}/messages", testapp.post_json(
        f"/api/chat/conversations/{other}/messages", {"content": "no model here"}, headers=account.headers,
        status=503))
    check("post", "/api/auth/logout", testapp.post("/api/auth/logout", headers=account.headers))
    assert len(seen) == 16


def test_the_documented_server_never_comes_from_the_host_header(testapp):
    response = testapp.get("/api/openapi.json", headers={"Host": "evil.example.net"})
    assert response.json["servers"] == [{"url": "/"}]
    assert "evil" not in response.text


# Values a client may put in each field of a request, valid and not. A client that checks
# its request against the document before sending it must never hold back one the server
# takes, nor send one the server refuses.
TEXT_PROBES = ["fine", "é ü 中文", "emoji 🔥 ok", "", "   ", "tab\there", "new\nline", "nul\x00byte",
               "bidi\u202eflip", "zero\u200bwidth", "c1\x85control", "nbsp\u00a0ok", "\u00a0", "\x1c", "\x85\x85",
               "\ufeff", "\u3000\u2028", "x" * 50, "x" * 51, "x" * 255, "x" * 256, "x" * 1025, 42, None, ["a list"],
               {"an": "object"}]
# Outside JSON Schema's strings (I-JSON): refused wherever they are, as the document says.
LONE_SURROGATES = ["\ud800", "a\udfffb"]
# One-line text is stripped before it is checked, so the server takes these although the
# document refuses them (it takes a little more than the document says, never less).
STRIPPED_PROBES = [" padded ", "\tpadded\n", "ends\n", " " + "x" * 255 + " "]
EMAIL_PROBES = ["ops@example.com", "ops@example", "ops example@example.com", "o@p@example.com",
                "ops@exa\u202emple.com", "ops\x07@example.com", f"{'o' * 88}@example.com", f"{'o' * 89}@example.com"]
URL_PROBES = ["https://example.com/a.png", "HTTP://example.com/a.png", "ftp://example.com/a.png",
              "https://example.com/a b.png", "https://" + "x" * 247, "https://" + "x" * 248]
INTEGER_PROBES = ["1", "0", "-1", "100", "101", "500", "501", "2147483647", "2147483648", "1.5", "abc", ""]


def body_field(document, path, method, field):
    return document["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"]["properties"][
        field]


def query_parameter(document, path, name):
    return next(parameter for parameter in document["paths"][path]["get"]["parameters"] if parameter["name"] == name)


def documented(schema, value):
    """As a client checks a value against the document: its patterns are ECMA-262's (with
    the u flag, as `regress` runs them), not Python's `re`, whose `\\s` and `$` differ."""
    if "anyOf" in schema:
        return any(documented(option, value) for option in schema["anyOf"])
    rest = {key: item for key, item in schema.items() if key != "pattern"}
    if not jsonschema.Draft202012Validator(rest).is_valid(value):
        return False
    return "pattern" not in schema or regress.Regex(schema["pattern"], "u").find(value) is not None


def documented_in_query(parameter, value):
    if value == "":
        return parameter.get("allowEmptyValue", False)
    if parameter["schema"]["type"] == "integer":
        if not re.fullmatch(r"-?[0-9]+", value):
            return False
        value = int(value)
    return documented(parameter["schema"], value)


def refused(response, field):
    return response.status_int == 400 and field in response.json.get("details", {})


def test_the_document_takes_the_requests_the_server_takes(make_app):
    testapp = make_app(**{"login.max_failures": 10_000})
    document = testapp.get("/api/openapi.json").json
    account = register(testapp)
    headers = account.headers
    conversation = testapp.post_json("/api/chat/conversations", {}, headers=headers, status=201).json["data"]["id"]
    unique = itertools.count()

    def new_account(field, value):
        number = next(unique)
        body = {"username": f"probe_{number}", "email": f"probe_{number}@example.com", "password": "long enough"}
        return testapp.post_json("/api/auth/register", {**body, field: value}, expect_errors=True)

    cases = [  # (path, method, field, probes, a request with the field set to a probe)
        ("/api/auth/register", "post", "username", TEXT_PROBES + STRIPPED_PROBES, new_account),
        ("/api/auth/register", "post", "email", TEXT_PROBES + STRIPPED_PROBES + EMAIL_PROBES, new_account),
        ("/api/auth/register", "post", "password", TEXT_PROBES + STRIPPED_PROBES, new_account),
        ("/api/auth/register", "post", "avatar_url", TEXT_PROBES + STRIPPED_PROBES + URL_PROBES, new_account),
        ("/api/auth/login", "post", "email", TEXT_PROBES + STRIPPED_PROBES, lambda field, value: testapp.post_json(
            "/api/auth/login", {"email": account.email, "password": "wrong", field: value}, expect_errors=True)),
        ("/api/auth/login", "post", "password", TEXT_PROBES + STRIPPED_PROBES, lambda field, value: testapp.post_json(
            "/api/auth/login", {"email": account.email, field: value}, expect_errors=True)),
        ("/api/chat/conversations", "post", "title", TEXT_PROBES + STRIPPED_PROBES, lambda field, value: (
            testapp.post_json("/api/chat/conversations", {field: value}, headers=headers, expect_errors=True))),
        ("/api/chat/conversations/{id}", "put", "title", TEXT_PROBES + STRIPPED_PROBES, lambda field, value: (
            testapp.put_json(f"/api/chat/conversations/{conversation}", {field: value}, headers=headers,
                             expect_errors=True))),
        ("/api/chat/conversations/{id}/messages", "post", "content", TEXT_PROBES + STRIPPED_PROBES,
         lambda field, value: testapp.post_json(f"/api/chat/conversations/{conversation}/messages?wait=false",
                                                {field: value}, headers=headers, expect_errors=True)),
    ]
    query_cases = [  # a cursor is opaque: only those refused whatever the cursor was, or empty (absent)
        ("/api/chat/conversations", "cursor", ["", "   ", "bidi\u202eflip", "c1\x85", "x" * 201]),
        ("/api/chat/conversations", "limit", INTEGER_PROBES),
        ("/api/chat/conversations/{id}", "limit", INTEGER_PROBES),
        ("/api/chat/conversations/{id}", "before", INTEGER_PROBES),
    ]
    disagreements, checked = [], 0
    for path, method, field, probes, send in cases:
        schema = body_field(document, path, method, field)
        for value in LONE_SURROGATES:
            if not refused(send(field, value), field):
                disagreements.append((method, path, field, value, "a lone surrogate taken"))
        for value in probes:
            in_document, taken = documented(schema, value), not refused(send(field, value), field)
            checked += 1
            if in_document != taken and not (taken and value in STRIPPED_PROBES):
                disagreements.append((method, path, field, value, in_document, taken))
    for path, field, probes in query_cases:
        parameter = query_parameter(document, path, field)
        url = path.replace("{id}", str(conversation))
        for value in probes:
            response = testapp.get(url, {field: value}, headers=headers, expect_errors=True)
            in_document, taken = documented_in_query(parameter, value), not refused(response, field)
            checked += 1
            if in_document != taken:
                disagreements.append(("get", path, field, value, in_document, taken))
    assert checked > 250
    assert disagreements == []


def test_a_conversation_is_created_without_a_body_as_documented(testapp, account):
    document = testapp.get("/api/openapi.json").json
    assert document["paths"]["/api/chat/conversations"]["post"]["requestBody"]["required"] is False
    created = testapp.post("/api/chat/conversations", headers=account.headers, status=201).json["data"]
    assert created["title"] == "Nouvelle conversation"
