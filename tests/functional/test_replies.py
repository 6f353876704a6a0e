import concurrent.futures
import time
from datetime import datetime, timedelta, timezone

import pytest
import redis
import requests
import sqlalchemy as sa

from tests.functional.live import Api, marker, script, upstream_requests
from tests.processes import wait_for_line

pytestmark = pytest.mark.slow


@pytest.fixture
def api(live_server):
    return Api(live_server.url).register()


def test_health_counts_the_workers(live_server):
    data = requests.get(live_server.url + "/api/health", timeout=10).json()["data"]
    assert data["workers"] >= 1


def test_sync_send_answers_with_the_complete_reply(api, live_server):
    conversation = api.conversation()
    tag = marker()
    response = api.send(conversation, f"Comment créer un Dockerfile ? {tag}")
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    question, reply = data["userMessage"], data["assistantMessage"]
    assert question["role"] == "user" and question["content"].endswith(tag)
    assert reply["role"] == "assistant" and reply["status"] == "complete" and reply["user_id"] is None
    assert tag in reply["content"] and reply["content"].startswith("(simulated)")
    meta = reply["metadata"]
    assert meta["model"] == "claude-sonnet-4-20250514"
    assert meta["stop_reason"] == "end_turn"
    assert meta["usage"]["output_tokens"] == 60 and meta["usage"]["input_tokens"] > 0
    assert meta["ttft_ms"] >= 0 and meta["duration_ms"] >= meta["ttft_ms"]
    # The conversation shows both as the send answered them, metadata included.
    assert api.messages(conversation) == [question, reply]


@pytest.mark.parametrize("how", ["prefer-header", "wait-parameter"])
def test_async_send_answers_202_then_the_reply_streams(api, how):
    conversation = api.conversation()
    kwargs = {"headers": {"Prefer": "respond-async"}} if how == "prefer-header" else {"wait": False}
    response = api.send(conversation, f"Why is my pod pending? {marker()}", **kwargs)
    assert response.status_code == 202, response.text
    reply = response.json()["data"]["assistantMessage"]
    assert reply["status"] in ("pending", "streaming")
    events = api.stream(conversation, reply["id"])
    deltas = [data for event, _, data in events if event == "delta"]
    assert [delta["index"] for delta in deltas] == list(range(len(deltas)))
    kind, _, final = events[-1]
    assert kind == "done" and final["status"] == "complete"
    assert "".join(delta["delta"] for delta in deltas) == final["content"]
    assert api.message(conversation, reply["id"])["content"] == final["content"]


def test_upstream_sees_the_system_prompt_and_history_with_the_new_turn_once(api, live_server):
    conversation = api.conversation()
    first, second = f"First question {marker()}", f"Second question {marker()}"
    first_reply = api.send(conversation, first).json()["data"]["assistantMessage"]["content"]
    api.send(conversation, second)
    [request] = upstream_requests(live_server.simulator_url, second)
    body = request["body"]
    assert "DevOps" in body["system"] and "destructive" in body["system"]
    assert body["stream"] is True
    assert body["messages"] == [
        {"role": "user", "content": first},
        {"role": "assistant", "content": first_reply},
        {"role": "user", "content": second},
    ]


def test_history_leaves_out_questions_left_unanswered_and_marks_partial_answers(api, live_server):
    conversation, tag = api.conversation(), marker()
    script(live_server.simulator_url, tag, [{"ttft_ms": 5000}, {"reply_tokens": 300, "tokens_per_second": 20}])
    base = f"/api/chat/conversations/{conversation}/messages"
    unanswered = api.send(conversation, f"Never mind {tag}", wait=False).json()["data"]["assistantMessage"]
    assert api.call("POST", f"{base}/{unanswered['id']}/cancel").json()["data"]["content"] == ""
    stopped_question = f"Tell me everything {tag}"
    stopped = api.send(conversation, stopped_question, wait=False).json()["data"]["assistantMessage"]
    api.stream(conversation, stopped["id"], until=2)
    partial = api.call("POST", f"{base}/{stopped['id']}/cancel").json()["data"]["content"]
    assert partial

    last = f"One more thing {marker()}"
    api.send(conversation, last)

    [request] = upstream_requests(live_server.simulator_url, last)
    assert request["body"]["messages"] == [
        {"role": "user", "content": stopped_question},
        {"role": "assistant", "content": partial + "\n\n[The user stopped this answer here.]"},
        {"role": "user", "content": last},
    ]


def test_a_short_title_is_generated_after_the_first_exchange(api):
    conversation = api.conversation()
    api.send(conversation, f"Kubernetes pods stuck in CrashLoopBackOff {marker()}")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        title = api.call("GET", f"/api/chat/conversations/{conversation}").json()["data"]["conversation"]["title"]
        if title != "Nouvelle conversation":
            break
        time.sleep(0.1)
    assert title != "Nouvelle conversation"
    assert 0 < len(title) <= 50


def test_a_conversation_moves_to_the_top_of_the_list_when_its_reply_ends(api, live_server):
    answered, tag = api.conversation(), marker()
    # Named by its user: no title job, which would move it up on its own.
    assert api.call("PUT", f"/api/chat/conversations/{answered}", json={"title": "Disk pressure"}).status_code == 200
    script(live_server.simulator_url, tag, [{"ttft_ms": 1500}])
    reply = api.send(answered, f"Why is the node under disk pressure? {tag}", wait=False).json()["data"]
    newer = api.conversation()

    def listed():
        return [conversation["id"] for conversation in api.call("GET", "/api/chat/conversations").json()["data"]]

    assert listed()[:2] == [newer, answered]
    api.wait_for(answered, reply["assistantMessage"]["id"])
    deadline = time.monotonic() + 10
    while listed()[0] != answered and time.monotonic() < deadline:
        time.sleep(0.05)
    assert listed()[:2] == [answered, newer]
    assert upstream_requests(live_server.simulator_url, tag, streamed=False) == []  # no title was asked for


def test_a_title_the_user_sets_while_the_title_is_generated_is_kept(api, live_server):
    conversation, tag = api.conversation(), marker()
    script(live_server.simulator_url, tag, [{}, {"ttft_ms": 1500}])  # the title slowly
    api.send(conversation, f"A question {tag}")
    deadline = time.monotonic() + 20
    while not upstream_requests(live_server.simulator_url, tag, streamed=False) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert upstream_requests(live_server.simulator_url, tag, streamed=False), "the title job never asked the model"
    api.call("PUT", f"/api/chat/conversations/{conversation}", json={"title": "Mine"})
    time.sleep(2)
    assert api.call("GET", f"/api/chat/conversations/{conversation}").json()["data"]["conversation"]["title"] == "Mine"


def test_overloaded_twice_then_success_is_retried_into_one_reply(api, live_server):
    conversation, tag = api.conversation(), marker()
    script(live_server.simulator_url, tag, [{"status": 529, "retry_after": 0}, {"status": 529, "retry_after": 0}])
    response = api.send(conversation, f"Retry me {tag}")
    assert response.status_code == 200, response.text
    assert response.json()["data"]["assistantMessage"]["status"] == "complete"
    assert len(upstream_requests(live_server.simulator_url, tag)) == 3
    assert [m["role"] for m in api.messages(conversation)] == ["user", "assistant"]


def test_a_model_failing_for_good_ends_in_error_with_a_502(api, live_server):
    conversation, tag = api.conversation(), marker()
    script(live_server.simulator_url, tag, [{"status": 500, "repeat": True}])
    response = api.send(conversation, f"Doomed {tag}", headers={"Accept-Language": "en"})
    assert response.status_code == 502
    body = response.json()
    assert body["success"] is False and body["code"] == "llm_failed"
    assert "model" in body["message"]
    question, reply = api.messages(conversation)
    assert question["content"] == f"Doomed {tag}"
    assert reply["status"] == "error"
    assert reply["metadata"]["error"]["code"] == "llm_failed"
    assert len(upstream_requests(live_server.simulator_url, tag)) == 3
    events = api.stream(conversation, reply["id"])
    assert events[-1][0] == "error" and events[-1][2]["code"] == "llm_failed"


def test_a_request_the_model_refuses_says_so_instead_of_overloaded(api, live_server):
    conversation, tag = api.conversation(), marker()
    script(live_server.simulator_url, tag, [{"status": 400, "message": "prompt is too long: 250000 tokens"}])
    response = api.send(conversation, f"Refuse me {tag}", headers={"Accept-Language": "en"})
    assert response.status_code == 502 and response.json()["code"] == "llm_failed"
    message = response.json()["message"]
    assert "refused" in message and "prompt is too long" in message and "overloaded" not in message
    assert len(upstream_requests(live_server.simulator_url, tag)) == 1


def test_a_mid_stream_error_ends_the_reply_in_error_keeping_its_text(api, live_server):
    conversation, tag = api.conversation(), marker()
    script(live_server.simulator_url, tag, [{"error_after_tokens": 5}])
    response = api.send(conversation, f"Break midway {tag}")
    assert response.status_code == 502
    reply = api.messages(conversation)[1]
    assert reply["status"] == "error"
    assert reply["content"].startswith("(simulated)")
    assert len(upstream_requests(live_server.simulator_url, tag)) == 1


@pytest.mark.parametrize("step", [{"hang": True}, {"hang_after_tokens": 3}], ids=["before-first-token", "mid-stream"])
def test_a_hung_upstream_ends_in_error_within_bounded_time(api, live_server, step):
    conversation, tag = api.conversation(), marker()
    script(live_server.simulator_url, tag, [{**step, "repeat": True}])
    started = time.monotonic()
    response = api.send(conversation, f"Hang {tag}")
    assert response.status_code == 502, response.text
    assert time.monotonic() - started < 25
    assert api.messages(conversation)[1]["status"] == "error"


def test_cancel_mid_stream_keeps_the_partial_text(api, live_server):
    conversation, tag = api.conversation(), marker()
    script(live_server.simulator_url, tag, [{"reply_tokens": 400, "tokens_per_second": 20}])
    reply = api.send(conversation, f"Long answer please {tag}", wait=False).json()["data"]["assistantMessage"]
    first = api.stream(conversation, reply["id"], until=2)
    assert first[0][0] == "delta"
    response = api.call("POST", f"/api/chat/conversations/{conversation}/messages/{reply['id']}/cancel")
    assert response.status_code == 200, response.text
    cancelled = response.json()["data"]
    assert cancelled["status"] == "cancelled"
    assert cancelled["content"].startswith("(simulated)")
    again = api.call("POST", f"/api/chat/conversations/{conversation}/messages/{reply['id']}/cancel")
    assert again.status_code == 409 and again.json()["code"] == "conflict"
    time.sleep(1.5)
    stored = api.message(conversation, reply["id"])
    assert stored["status"] == "cancelled" and stored["content"] == cancelled["content"]
    events = api.stream(conversation, reply["id"])
    assert events[-1][0] == "done" and events[-1][2]["status"] == "cancelled"
    # The job ends as cancelled (and counted so), not failed.
    worker = live_server.workers[0] if live_server.workers else live_server.server
    wait_for_line(worker, rf"reply cancelled: .*reply_id={reply['id']}\b", timeout=10)


def test_cancelling_a_finished_reply_is_a_409(api):
    conversation = api.conversation()
    reply = api.send(conversation, f"Quick {marker()}").json()["data"]["assistantMessage"]
    response = api.call("POST", f"/api/chat/conversations/{conversation}/messages/{reply['id']}/cancel")
    assert response.status_code == 409 and response.json()["code"] == "conflict"


def test_a_finished_reply_replays_in_full_and_resumes_after_last_event_id(api):
    conversation = api.conversation()
    reply = api.send(conversation, f"Replay {marker()}").json()["data"]["assistantMessage"]
    events = api.stream(conversation, reply["id"])
    deltas = [data for event, _, data in events if event == "delta"]
    assert "".join(d["delta"] for d in deltas) == reply["content"]
    assert events[-1][0] == "done" and events[-1][2]["id"] == reply["id"]
    if len(deltas) > 2:
        resumed = api.stream(conversation, reply["id"], last_event_id=1)
        assert [d["index"] for e, _, d in resumed if e == "delta"] == [d["index"] for d in deltas[2:]]
    token_in_query = requests.get(
        f"{api.url}/api/chat/conversations/{conversation}/messages/{reply['id']}/stream",
        params={"token": api.token}, timeout=30)
    assert token_in_query.status_code == 200 and "event: done" in token_in_query.text


@pytest.mark.distributed
def test_an_ended_reply_leaves_redis_within_minutes(api, live_server):
    # Redis holds what replies in flight need; an ended reply is served from the database.
    conversation = api.conversation()
    reply = api.send(conversation, f"Keep it short {marker()}").json()["data"]["assistantMessage"]
    connection = redis.Redis.from_url(live_server.redis_url)
    try:
        [stream] = connection.keys(f"aisystant:reply:{reply['id']}:*")
        [job] = connection.keys(f"rq:job:reply-{reply['id']}-*")
        deadline = time.monotonic() + 10
        while connection.ttl(job) < 0:  # RQ sets it once the job returns, after the reply's end
            assert time.monotonic() < deadline, "the reply's job never finished"
            time.sleep(0.05)
        assert 0 < connection.ttl(stream) <= 300
        assert 0 < connection.ttl(job) <= 300
    finally:
        connection.close()


def test_stream_errors_are_json(api):
    conversation = api.conversation()
    data = api.send(conversation, f"Hi {marker()}").json()["data"]
    base = f"/api/chat/conversations/{conversation}/messages"
    assert api.call("GET", f"{base}/{data['userMessage']['id']}/stream").status_code == 404
    assert api.call("GET", f"{base}/999999/stream").status_code == 404
    stream = f"{base}/{data['assistantMessage']['id']}/stream"
    for value in ("x", "-1", "1.5", "1e3"):
        bad = api.call("GET", stream, headers={"Last-Event-ID": value, "Accept-Language": "en"})
        assert bad.status_code == 400 and bad.json()["code"] == "validation_failed", value
        assert bad.json()["details"] == {"Last-Event-ID": "Must be an integer, 0 or more."}
    # What the message says is what is taken: a reader past every event gets the end.
    beyond = api.call("GET", stream, headers={"Last-Event-ID": str(10**12)})
    assert beyond.status_code == 200 and "event: done" in beyond.text
    anonymous = requests.get(api.url + f"{base}/{data['assistantMessage']['id']}/stream", timeout=10)
    assert anonymous.status_code == 401 and anonymous.json()["code"] == "unauthorized"


@pytest.mark.parametrize("body, status, code", [
    ({"content": ""}, 400, "validation_failed"),
    ({"content": "   \n\t "}, 400, "validation_failed"),
    ({}, 400, "validation_failed"),
    ({"content": 42}, 400, "validation_failed"),
    ({"content": ["a"]}, 400, "validation_failed"),
    ({"content": "nul\x00byte"}, 400, "validation_failed"),
    ({"content": "x" * 100_001}, 413, "payload_too_large"),
])
def test_bad_content_is_refused_and_nothing_is_stored(api, body, status, code):
    conversation = api.conversation()
    response = api.call("POST", f"/api/chat/conversations/{conversation}/messages", json=body)
    assert response.status_code == status, response.text
    assert response.json()["code"] == code
    assert api.messages(conversation) == []


def test_sending_to_another_users_conversation_is_a_404(api, live_server):
    theirs = Api(live_server.url).register().conversation()
    response = api.send(theirs, "Let me in")
    assert response.status_code == 404 and response.json()["code"] == "not_found"


def test_two_messages_sent_at_once_each_get_exactly_one_reply(api):
    conversation = api.conversation()
    contents = [f"Concurrent A {marker()}", f"Concurrent B {marker()}"]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        responses = list(pool.map(lambda content: api.send(conversation, content), contents))
    assert [response.status_code for response in responses] == [200, 200]
    messages = api.messages(conversation)
    assert sorted(m["role"] for m in messages) == ["assistant", "assistant", "user", "user"]
    assert all(m["status"] == "complete" for m in messages)
    for response in responses:
        data = response.json()["data"]
        assert data["userMessage"]["content"].split()[-1] in data["assistantMessage"]["content"]


def slow_reply_streaming(api, live_server):
    """A 10-second reply, already streaming: (conversation id, reply, its marker)."""
    conversation, tag = api.conversation(), marker()
    script(live_server.simulator_url, tag, [{"reply_tokens": 300, "tokens_per_second": 30}])
    reply = api.send(conversation, f"A long answer please {tag}", wait=False).json()["data"]["assistantMessage"]
    assert api.stream(conversation, reply["id"], until=2)[0][0] == "delta"
    return conversation, reply, tag


def reply_rows(live_server, question_id):
    engine = sa.create_engine(live_server.database_url)
    with engine.connect() as connection:
        rows = connection.execute(sa.text(
            "SELECT status, attempt FROM messages WHERE reply_to_id = :id"), {"id": question_id}).all()
    engine.dispose()
    return [tuple(row) for row in rows]


@pytest.mark.distributed
def test_more_clients_waiting_on_replies_than_a_default_redis_pool_all_get_them(api, live_server):
    conversation, tag = api.conversation(), marker()
    script(live_server.simulator_url, tag, [{"reply_tokens": 60, "tokens_per_second": 20}])
    reply = api.send(conversation, f"Popular reply {tag}", wait=False).json()["data"]["assistantMessage"]
    with concurrent.futures.ThreadPoolExecutor(120) as pool:
        streams = list(pool.map(lambda _: api.stream(conversation, reply["id"]), range(120)))
    finals = [events[-1] for events in streams]
    assert all(kind == "done" and data["status"] == "complete" for kind, _, data in finals)
    assert len({data["content"] for _, _, data in finals}) == 1


@pytest.mark.distributed
def test_a_burst_of_requests_queues_for_few_database_connections(api, live_server):
    conversations = [api.conversation() for _ in range(3)]
    engine = sa.create_engine(live_server.database_url)
    peak = 0

    def count():
        with engine.connect() as connection:
            return connection.execute(sa.text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")).scalar() - 1

    with concurrent.futures.ThreadPoolExecutor(80) as pool:
        sent = [pool.submit(api.send, conversations[i % 3], f"Burst {i} {marker()}", wait=False) for i in range(80)]
        while not all(future.done() for future in sent):
            peak = max(peak, count())
            time.sleep(0.01)
    engine.dispose()
    assert all(future.result().status_code == 202 for future in sent)
    # The API process's two pools and the worker's one, at 5 + 5 each.
    assert 0 < peak <= 30


def test_deleting_a_conversation_ends_its_reply_for_those_waiting_on_it(api, live_server):
    conversation, reply, _ = slow_reply_streaming(api, live_server)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        reader = pool.submit(api.stream, conversation, reply["id"])
        time.sleep(0.5)
        assert api.call("DELETE", f"/api/chat/conversations/{conversation}").status_code == 200
        events = reader.result(timeout=30)
    assert events[-1][0] == "error" and events[-1][2]["code"] == "not_found"


def test_a_sync_send_whose_conversation_is_deleted_meanwhile_is_a_404(api, live_server):
    conversation, tag = api.conversation(), marker()
    script(live_server.simulator_url, tag, [{"reply_tokens": 300, "tokens_per_second": 30}])
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        sending = pool.submit(api.send, conversation, f"Long {tag}")
        deadline = time.monotonic() + 20
        while not upstream_requests(live_server.simulator_url, tag) and time.monotonic() < deadline:
            time.sleep(0.1)
        api.call("DELETE", f"/api/chat/conversations/{conversation}")
        response = sending.result(timeout=30)
    assert response.status_code == 404 and response.json()["code"] == "not_found", response.text


def test_a_reply_lost_too_many_times_ends_in_error_instead_of_looping(api, live_server):
    conversation, tag = api.conversation(), marker()
    engine = sa.create_engine(live_server.database_url)
    with engine.begin() as connection:
        user_id = connection.execute(sa.text("SELECT user_id FROM conversations WHERE id = :c"),
                                     {"c": conversation}).scalar()
        question = connection.execute(sa.text(
            "INSERT INTO messages (conversation_id, user_id, role, content, status) "
            "VALUES (:c, :u, 'user', :q, 'complete') RETURNING id"), {"c": conversation, "u": user_id,
                                                                     "q": f"Cursed {tag}"}).scalar()
        # As five lost attempts leave it: streaming, attempt 5, untouched for a while, no lease.
        connection.execute(sa.text(
            "INSERT INTO messages (conversation_id, role, content, status, reply_to_id, attempt, updated_at) "
            "VALUES (:c, 'assistant', '', 'streaming', :q, 5, :t)"),
            {"c": conversation, "q": question, "t": datetime.now(timezone.utc) - timedelta(minutes=5)})
    engine.dispose()
    reply = api.messages(conversation)[-1]
    final = api.wait_for(conversation, reply["id"], timeout=30)
    assert final["status"] == "error" and final["metadata"]["error"]["code"] == "llm_failed"
    assert upstream_requests(live_server.simulator_url, tag) == []
