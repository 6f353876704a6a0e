"""Socket.IO for web clients, as the official `socket.io-client` v4 and python-socketio see it.

Every test runs with both clients (tests/realtime_clients.py) against a live server in
both modes: `serve` with a worker process on PostgreSQL and Redis, and the embedded
default (SQLite, in-process Redis, one process). Replies come from the model simulator.
"""

import time
import uuid

import jwt
import pytest
import redis

from aisystant_server import events
from tests.functional.conftest import TEST_JWT_SECRET
from tests.functional.live import Api, marker, script
from tests.realtime_clients import CLIENT_KINDS, NodeDriver, PythonClient, install_node_client, reply_text

pytestmark = pytest.mark.slow
REPLY_TIMEOUT = 30
CLIENT_EVENTS = ["join_conversation", "leave_conversation", "new_message", "typing", "stop_typing"]


@pytest.fixture(scope="session")
def node_driver(tmp_path_factory):
    install_node_client()
    driver = NodeDriver(tmp_path_factory.mktemp("node") / "client.log")
    yield driver
    driver.close()


@pytest.fixture(params=list(CLIENT_KINDS))
def client_kind(request):
    return request.param


@pytest.fixture
def new_client(client_kind, request):
    """A factory of unconnected clients of this test's kind, all closed at the end."""
    made = []

    def factory():
        client = request.getfixturevalue("node_driver").client() if client_kind == "node" else PythonClient()
        made.append(client)
        return client

    yield factory
    for client in made:
        client.close()


class Account(Api):
    """A registered user of the live server, as its web client holds it."""

    def register(self):
        super().register()
        me = self.call("GET", "/api/auth/me").json()["data"]
        self.user_id, self.username = me["id"], me["username"]
        return self

    def logout(self):
        """Log out (the token is revoked); returns the dead token."""
        response = self.call("POST", "/api/auth/logout")
        assert response.status_code == 200, response.text
        return self.token

    def conversation_data(self, conversation_id):
        return self.call("GET", f"/api/chat/conversations/{conversation_id}").json()["data"]["conversation"]


@pytest.fixture(scope="module")
def api(live_server):
    """The user of the web clients (registering costs a password hash: once per module);
    each test works in conversations of its own."""
    return Account(live_server.url).register()


@pytest.fixture(scope="module")
def stranger(live_server):
    return Account(live_server.url).register()


@pytest.fixture(scope="module")
def revoked_token(live_server):
    return Account(live_server.url).register().logout()


@pytest.fixture(scope="module")
def events_url(live_server):
    """An `aisystant-server events` process beside the server (distributed mode only)."""
    return live_server.start_events()


@pytest.fixture(scope="module")
def strict_events_url(live_server):
    """An events process that allows one request per window: anything beyond is rate limited."""
    return live_server.start_events(RATE_LIMIT_MAX_REQUESTS="1")


def join(client, url, api, *conversations):
    """`client`, connected to `url` as `api`'s user and in the rooms of `conversations`."""
    connection = client.connect(url, api.token)
    assert connection.connected, connection
    for conversation in conversations:
        assert client.call("join_conversation", {"conversationId": conversation})["success"] is True
    return client


def connected(new_client, url, api, *conversations):
    """A new client of `api`'s user, connected to `url` and in the rooms of `conversations`."""
    return join(new_client(), url, api, *conversations)


def assert_error(ack, code):
    assert ack["success"] is False, ack
    assert ack["code"] == code, ack
    assert isinstance(ack["message"], str) and ack["message"], ack
    return ack


def pairs(client):
    return [(event.name, event.data) for event in client.events()]


def assert_shows_the_stored_reply(events, final, api):
    """The reply's deltas (and resets) in `events` make exactly its final and stored text,
    with no index missing."""
    text, indices = reply_text(events, final["id"])
    assert text == final["content"] == api.message(final["conversation_id"], final["id"])["content"]
    assert indices == list(range(len(indices))) and indices, indices


def final_message(client, message_id, timeout=REPLY_TIMEOUT):
    return client.wait_for("message_received", lambda m: m["id"] == message_id and m["status"] == "complete",
                           timeout=timeout)


def slow_reply(clients, live_server, api, tokens=100):
    """A reply of about 4 s (a delta per token or two) in a new conversation whose room
    `clients` joined first: (conversation, reply id)."""
    conversation, tag = api.conversation(), marker()
    script(live_server.simulator_url, tag, [{"reply_tokens": tokens, "tokens_per_second": 25, "repeat": True}])
    for client in clients:
        join(client, live_server.url, api, conversation)
    data = api.send(conversation, f"Walk me through a node drain {tag}", wait=False).json()["data"]
    return conversation, data["assistantMessage"]["id"]


# Connecting


@pytest.mark.parametrize("via", ["auth", "query"])
def test_a_valid_token_connects_in_the_handshake_auth_or_the_query(new_client, live_server, api, via):
    connection = new_client().connect(live_server.url, api.token, via=via)
    assert connection.connected and connection.sid


def _claims(account_id, **changes):
    now = int(time.time())
    claims = {"sub": str(account_id), "jti": uuid.uuid4().hex, "iat": now, "exp": now + 3600, **changes}
    return {name: value for name, value in claims.items() if value is not None}


BAD_TOKENS = {
    "missing": lambda user_id, revoked: None,
    "empty": lambda user_id, revoked: "",
    "garbage": lambda user_id, revoked: "garbage.not-a.jwt",
    "not-a-string": lambda user_id, revoked: 12345,
    "expired": lambda user_id, revoked: jwt.encode(_claims(user_id, iat=int(time.time()) - 7200,
                                                           exp=int(time.time()) - 3600), TEST_JWT_SECRET),
    "other-secret": lambda user_id, revoked: jwt.encode(_claims(user_id), "another-secret-" + "y" * 40),
    "alg-none": lambda user_id, revoked: jwt.encode(_claims(user_id), None, algorithm="none"),
    "unknown-user": lambda user_id, revoked: jwt.encode(_claims(987654321), TEST_JWT_SECRET),
    "revoked": lambda user_id, revoked: revoked,
}


@pytest.mark.parametrize("kind, via", [(kind, via) for via in ("auth", "query") for kind in BAD_TOKENS
                                       if via == "auth" or kind not in ("missing", "not-a-string")])
def test_a_bad_token_is_refused_at_connect_with_a_clear_message(new_client, live_server, api, revoked_token, kind,
                                                                 via):
    token = BAD_TOKENS[kind](api.user_id, revoked_token)
    connection = new_client().connect(live_server.url, token, via=via)
    assert not connection.connected
    assert isinstance(connection.message, str) and " " in connection.message.strip(), connection
    assert connection.data["code"] == "unauthorized", connection
    assert isinstance(connection.data["message"], str) and connection.data["message"], connection


def test_a_socket_whose_token_is_revoked_stops_within_seconds(new_client, live_server):
    api = Account(live_server.url).register()
    conversation = api.conversation()
    client = connected(new_client, live_server.url, api, conversation)
    api.logout()
    assert client.wait_disconnected(timeout=10)
    assert new_client().connect(live_server.url, api.token).connected is False


@pytest.mark.parametrize("origin", ["http://localhost:3000", "own"])
def test_the_cors_origins_and_the_servers_own_origin_may_connect(new_client, live_server, api, origin):
    origin = live_server.url if origin == "own" else origin
    assert new_client().connect(live_server.url, api.token, headers={"Origin": origin}).connected


def test_another_origin_is_refused(new_client, live_server, api):
    connection = new_client().connect(live_server.url, api.token, headers={"Origin": "https://evil.example"})
    assert not connection.connected


# Joining and leaving


@pytest.mark.parametrize("payload", [
    lambda conversation: conversation,
    lambda conversation: str(conversation),
    lambda conversation: {"conversationId": conversation},
    lambda conversation: {"conversationId": str(conversation)},
], ids=["id", "numeric-string", "object", "object-numeric-string"])
def test_the_owner_joins_a_conversation(new_client, live_server, api, payload):
    conversation = api.conversation()
    client = connected(new_client, live_server.url, api)
    ack = client.call("join_conversation", payload(conversation))
    assert ack["success"] is True, ack
    assert ack["data"]["conversation"]["id"] == conversation
    assert ack["data"]["conversation"]["title"] == api.conversation_data(conversation)["title"]
    assert ack["data"]["replies"] == []


def test_another_users_conversation_answers_the_same_not_found_as_a_missing_one(new_client, live_server, api,
                                                                               stranger):
    theirs = stranger.conversation()
    client = connected(new_client, live_server.url, api)
    other = assert_error(client.call("join_conversation", theirs), "not_found")
    missing = assert_error(client.call("join_conversation", theirs + 10_000_000), "not_found")
    assert other["message"] == missing["message"]
    assert other.get("details") == missing.get("details")
    for event in ("new_message", "typing", "stop_typing"):
        assert_error(client.call(event, {"conversationId": theirs, "content": "hello"}), "not_found")
    stranger_client = connected(new_client, live_server.url, stranger, theirs)
    stranger_client.call("typing", {"conversationId": theirs})
    assert client.call("join_conversation", api.conversation())["success"] is True
    assert client.received() == []


def test_a_client_that_left_receives_nothing_more(new_client, live_server, api):
    conversation = api.conversation()
    leaving = connected(new_client, live_server.url, api, conversation)
    staying = connected(new_client, live_server.url, api, conversation)
    assert leaving.call("leave_conversation", conversation) == {"success": True}
    reply = api.send(conversation, f"Is the cluster healthy? {marker()}").json()["data"]["assistantMessage"]
    final_message(staying, reply["id"])
    assert leaving.call("leave_conversation", {"conversationId": conversation}) == {"success": True}
    assert leaving.received() == []


# A message and its reply


def test_new_message_streams_the_reply_to_the_room(new_client, live_server, api):
    conversation = api.conversation()
    sender = connected(new_client, live_server.url, api, conversation)
    watcher = connected(new_client, live_server.url, api, conversation)
    question = f"Kubernetes pods stuck in CrashLoopBackOff {marker()}"
    ack = sender.call("new_message", {"conversationId": conversation, "content": question})
    assert ack["success"] is True, ack
    asked, pending = ack["data"]["userMessage"], ack["data"]["assistantMessage"]
    assert asked["role"] == "user" and asked["content"] == question and asked["conversation_id"] == conversation
    assert pending["role"] == "assistant" and pending["status"] == "pending"
    for client in (sender, watcher):
        assert client.wait_for("message_received", lambda m: m["id"] == asked["id"]) == asked
        final = final_message(client, pending["id"])
        assert final["role"] == "assistant" and final["content"].startswith("(simulated)")
        assert_shows_the_stored_reply(pairs(client), final, api)
        assert all(set(delta) == {"conversation_id", "message_id", "index", "delta"}
                   for delta in client.received("message_delta"))
        assert client.received("typing") == [{"conversation_id": conversation, "username": "AiSystant"}]
        assert client.wait_for("stop_typing") == {"conversation_id": conversation, "username": "AiSystant"}
        # The assistant stops typing once its reply has arrived, not before.
        events = client.events()
        arrived = next(index for index, event in enumerate(events)
                       if event.name == "message_received" and event.data["id"] == pending["id"])
        assert [event.name for event in events].index("stop_typing") > arrived
        updated = client.wait_for("conversation_updated", lambda c: c["id"] == conversation)
        assert updated["title"] and updated["title"] != "Nouvelle conversation" and len(updated["title"]) <= 50
    assert api.conversation_data(conversation)["title"] == updated["title"]


def test_new_message_without_an_acknowledgement_is_sent_all_the_same(new_client, live_server, api):
    conversation = api.conversation()
    client = connected(new_client, live_server.url, api, conversation)
    question = f"Why is the node NotReady? {marker()}"
    client.send("new_message", {"conversationId": conversation, "content": question})
    asked = client.wait_for("message_received", lambda m: m["role"] == "user")
    assert asked["content"] == question
    final = client.wait_for("message_received", lambda m: m["role"] == "assistant" and m["status"] == "complete",
                            timeout=REPLY_TIMEOUT)
    assert_shows_the_stored_reply(pairs(client), final, api)


def test_messages_sent_over_rest_reach_the_room(new_client, live_server, api):
    conversation = api.conversation()
    client = connected(new_client, live_server.url, api, conversation)
    data = api.send(conversation, f"What does OOMKilled mean? {marker()}", wait=False).json()["data"]
    assert client.wait_for("message_received", lambda m: m["id"] == data["userMessage"]["id"]) == data["userMessage"]
    final = final_message(client, data["assistantMessage"]["id"])
    assert_shows_the_stored_reply(pairs(client), final, api)


def test_a_failed_reply_is_a_message_error(new_client, live_server, api):
    conversation = api.conversation()
    client = connected(new_client, live_server.url, api, conversation)
    tag = marker()
    script(live_server.simulator_url, tag, [{"error_after_tokens": 3, "repeat": True}])
    ack = client.call("new_message", {"conversationId": conversation, "content": f"Break it {tag}"})
    reply = ack["data"]["assistantMessage"]
    error = client.wait_for("message_error", lambda e: e["message_id"] == reply["id"], timeout=REPLY_TIMEOUT)
    assert error["conversation_id"] == conversation
    assert isinstance(error["code"], str) and error["code"] and isinstance(error["message"], str) and error["message"]
    assert api.wait_for(conversation, reply["id"])["status"] == "error"


def test_oversized_content_is_payload_too_large_and_nothing_is_stored(new_client, live_server, api):
    conversation = api.conversation()
    client = connected(new_client, live_server.url, api, conversation)
    ack = client.call("new_message", {"conversationId": conversation, "content": "x" * 100_001})
    assert_error(ack, "payload_too_large")
    assert client.call("join_conversation", conversation)["success"] is True
    assert api.messages(conversation) == []


# Typing


def test_typing_reaches_the_others_in_the_room_never_the_sender(new_client, live_server, api):
    conversation = api.conversation()
    typist = connected(new_client, live_server.url, api, conversation)
    other_tab = connected(new_client, live_server.url, api, conversation)
    elsewhere = connected(new_client, live_server.url, api, api.conversation())
    expected = {"conversation_id": conversation, "username": api.username}
    assert typist.call("typing", {"conversationId": conversation}) == {"success": True}
    assert other_tab.wait_for("typing") == expected
    typist.send("stop_typing", {"conversationId": conversation})  # as web clients do: no acknowledgement
    assert other_tab.wait_for("stop_typing") == expected
    # A round trip after the others got both: anything sent to the typist has arrived too.
    assert typist.call("join_conversation", conversation)["success"] is True
    assert elsewhere.call("join_conversation", conversation)["success"] is True
    assert typist.received("typing") == typist.received("stop_typing") == []
    assert elsewhere.received("typing") == elsewhere.received("stop_typing") == []


# Payloads of the wrong shape


def _bad_payloads(conversation):
    shapes = [(), (None,), ("not an id",), ([conversation],), ({},), ({"conversationId": None},),
              ({"conversationId": {"id": conversation}},), ({"conversationId": [conversation]},),
              ({"conversationId": True},), ({"conversationId": 1.5},), ({"conversationId": "12abc"},),
              ({"conversation_id": conversation},), (True,)]
    return shapes


NEW_MESSAGE_SHAPES = [
    lambda c: ({"conversationId": c},), lambda c: ({"conversationId": c, "content": None},),
    lambda c: ({"conversationId": c, "content": 42},), lambda c: ({"conversationId": c, "content": ["a"]},),
    lambda c: ({"conversationId": c, "content": ""},), lambda c: ({"conversationId": c, "content": {"text": "a"}},),
    lambda c: (c,), lambda c: ("question?",),
]


SINCE_SHAPES = [
    lambda c: ({"conversationId": c, "since": "0"},), lambda c: ({"conversationId": c, "since": [1, 2]},),
    lambda c: ({"conversationId": c, "since": {"abc": 1}},), lambda c: ({"conversationId": c, "since": {"1": "x"}},),
    lambda c: ({"conversationId": c, "since": {"1": 1.5}},), lambda c: ({"conversationId": c, "since": {"1": -2}},),
]


@pytest.mark.parametrize("event", CLIENT_EVENTS)
def test_a_payload_of_the_wrong_shape_gets_an_error_acknowledgement(new_client, live_server, api, event):
    conversation = api.conversation()
    client = connected(new_client, live_server.url, api, conversation)
    shapes = _bad_payloads(conversation)
    if event == "new_message":
        shapes += [shape(conversation) for shape in NEW_MESSAGE_SHAPES]
    if event == "join_conversation":
        shapes += [shape(conversation) for shape in SINCE_SHAPES]
    for args in shapes:
        ack = client.call(event, *args, timeout=5)
        assert isinstance(ack, dict), (args, ack)
        assert_error(ack, "validation_failed")
    client.send(event, "not an id")  # no acknowledgement asked: nothing to answer, nothing to break
    assert client.call("join_conversation", conversation)["success"] is True
    assert client.disconnect_reason is None
    assert api.messages(conversation) == []


# Across processes and catching up


@pytest.mark.distributed
def test_a_client_of_another_events_process_gets_the_reply_of_a_message_posted_to_the_api(
        new_client, live_server, api, events_url):
    conversation = api.conversation()
    far = connected(new_client, events_url, api, conversation)
    near = connected(new_client, live_server.url, api, conversation)
    data = api.send(conversation, f"Why is my pod Pending? {marker()}", wait=False).json()["data"]
    reply_id = data["assistantMessage"]["id"]
    assert far.wait_for("message_received", lambda m: m["id"] == data["userMessage"]["id"])
    final = final_message(far, reply_id)
    assert_shows_the_stored_reply(pairs(far), final, api)
    assert near.call("typing", {"conversationId": conversation}) == {"success": True}
    assert far.wait_for("typing", lambda t: t["username"] == api.username)
    far_ack = far.call("new_message", {"conversationId": conversation, "content": f"And now? {marker()}"})
    assert final_message(near, far_ack["data"]["assistantMessage"]["id"])


@pytest.mark.distributed
def test_the_events_process_accepts_the_cors_origins_and_its_own_only(new_client, api, events_url):
    for origin, accepted in (("http://localhost:3000", True), (events_url, True), ("https://evil.example", False)):
        connection = new_client().connect(events_url, api.token, headers={"Origin": origin})
        assert connection.connected is accepted, (origin, connection)


@pytest.mark.distributed
def test_without_a_model_new_message_keeps_the_question_and_says_llm_not_configured(new_client, live_server, api):
    events_url = live_server.start_events(ANTHROPIC_API_KEY="")
    conversation = api.conversation()
    client = connected(new_client, events_url, api, conversation)
    question = f"Anyone there? {marker()}"
    ack = assert_error(client.call("new_message", {"conversationId": conversation, "content": question}),
                       "llm_not_configured")
    [kept] = api.messages(conversation)
    assert kept["role"] == "user" and kept["content"] == question
    assert client.wait_for("message_received", lambda m: m["id"] == kept["id"]) == kept
    assert ack.get("details", {}).get("user_message_id", kept["id"]) == kept["id"]


@pytest.mark.distributed
def test_events_of_a_deployment_on_another_redis_database_never_reach_our_clients(
        new_client, live_server, api, redis_databases):
    conversation = api.conversation()
    client = connected(new_client, live_server.url, api, conversation)
    other_deployment = next(url for url in redis_databases if url != live_server.redis_url)
    # Published in this order on one Redis server: ours arrives after the other's would have.
    for redis_url, text in ((other_deployment, "another deployment's text"), (live_server.redis_url, "ours")):
        events.emit(events.manager({"redis.url": redis_url}, write_only=True), "message_delta",
                    {"conversation_id": conversation, "message_id": 1, "index": 0, "delta": text}, conversation)
    client.wait_for("message_delta", lambda delta: delta["delta"] == "ours")
    assert [delta["delta"] for delta in client.received("message_delta")] == ["ours"]


@pytest.mark.distributed
def test_the_events_process_applies_the_rate_limit(new_client, api, strict_events_url):
    client = connected(new_client, strict_events_url, api)
    ack = assert_error(client.call("join_conversation", api.conversation()), "rate_limited")
    assert ack["details"]["retry_after"] > 0


def test_a_client_that_joins_mid_reply_gets_all_its_text(new_client, live_server, api):
    watcher = new_client()
    conversation, reply_id = slow_reply([watcher], live_server, api)
    watcher.wait_for("message_delta", lambda d: d["message_id"] == reply_id and d["index"] >= 3)
    late = new_client()
    assert late.connect(live_server.url, api.token).connected
    ack = late.call("join_conversation", conversation)
    assert [(r["message_id"], r["status"]) for r in ack["data"]["replies"]] == [(reply_id, "streaming")]
    assert ack["data"]["replies"][0]["index"] >= 3
    final = final_message(late, reply_id)
    assert_shows_the_stored_reply(pairs(late), final, api)


def test_a_client_that_reconnects_mid_reply_ends_with_exactly_the_stored_text(new_client, live_server, api):
    watcher, client = new_client(), new_client()
    conversation, reply_id = slow_reply([watcher, client], live_server, api)
    client.wait_for("message_delta", lambda d: d["message_id"] == reply_id and d["index"] >= 2)
    client.disconnect()
    before = pairs(client)
    last_seen = max(data["index"] for name, data in before if name == "message_delta")
    watcher.wait_for("message_delta", lambda d: d["message_id"] == reply_id and d["index"] >= last_seen + 3)
    assert client.connect(live_server.url, api.token).connected
    ack = client.call("join_conversation", {"conversationId": conversation, "since": {str(reply_id): last_seen}})
    assert ack["success"] is True and ack["data"]["replies"][0]["message_id"] == reply_id
    final = final_message(client, reply_id)
    after = pairs(client)
    assert all(data["index"] > last_seen for name, data in after if name == "message_delta")
    assert_shows_the_stored_reply(before + after, final, api)


def test_a_client_that_reconnects_after_the_reply_ended_gets_its_final_message(new_client, live_server, api):
    watcher, client = new_client(), new_client()
    conversation, reply_id = slow_reply([watcher, client], live_server, api, tokens=30)
    client.wait_for("message_delta", lambda d: d["message_id"] == reply_id and d["index"] >= 1)
    client.disconnect()
    last_seen = max(d["index"] for d in client.received("message_delta"))
    stored = final_message(watcher, reply_id)
    assert client.connect(live_server.url, api.token).connected
    ack = client.call("join_conversation", {"conversationId": conversation, "since": {str(reply_id): last_seen}})
    assert ack["success"] is True and ack["data"]["replies"] == []
    assert final_message(client, reply_id) == stored


@pytest.fixture
def one_of_each(node_driver):
    """A Node client and a Python client, for a test too slow to run once per kind."""
    clients = [node_driver.client(), PythonClient()]
    yield clients
    for client in clients:
        client.close()


@pytest.mark.distributed
def test_a_reply_redone_after_redis_lost_its_stream_resets_the_clients_to_the_stored_text(
        one_of_each, live_server, api):
    conversation, reply_id = slow_reply(one_of_each, live_server, api)
    one_of_each[0].wait_for("message_delta", lambda d: d["message_id"] == reply_id and d["index"] >= 3)
    live_server.workers[-1].kill()
    with redis.Redis.from_url(live_server.redis_url) as connection:
        connection.delete(*connection.keys(f"aisystant:reply:{reply_id}:*"))
    live_server.start_worker()
    for client in one_of_each:
        final = final_message(client, reply_id)
        resets = client.received("message_reset", lambda r: r["message_id"] == reply_id)
        assert len(resets) == 1 and set(resets[0]) == {"conversation_id", "message_id", "index", "text"}, client.kind
        assert reply_text(pairs(client), reply_id)[0] == final["content"], client.kind
        assert final["content"] == api.message(conversation, reply_id)["content"]
