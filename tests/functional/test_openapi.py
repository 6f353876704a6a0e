import jsonschema
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
