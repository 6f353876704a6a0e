"""Redis or PostgreSQL goes away for a few seconds: nothing stored is lost, nothing lies.

Each test runs the server and a worker against a Redis or a PostgreSQL of its own
(tests/outages.py), stops it mid-reply, and starts it again (Redis empty, as it comes
back without persistence).
"""

import concurrent.futures
import os
import time

import pytest
import requests

from aisystant_server.migrations import upgrade
from aisystant_server.simulator.replies import answer_tokens
from tests.functional.conftest import LiveStack, _admin_execute, postgres_url
from tests.functional.live import Api, marker, script, upstream_requests
from tests.functional.test_lost_replies import text_of
from tests.outages import PrivatePostgres, PrivateRedis

pytestmark = [pytest.mark.slow, pytest.mark.distributed]
REPLY_TOKENS = 60


@pytest.fixture
def private_redis(tmp_path):
    server = PrivateRedis(tmp_path / "redis")
    yield server
    server.stop()


@pytest.fixture
def on_private_redis(template_database, private_redis, simulator, tmp_path):
    name = f"aisystant_outage_{os.getpid()}_{time.monotonic_ns()}"
    _admin_execute(f"CREATE DATABASE {name} TEMPLATE {template_database}")
    stack = LiveStack("postgresql", postgres_url(name), private_redis.url, simulator, tmp_path)
    yield stack
    stack.stop()
    _admin_execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(scope="module")
def private_postgres():
    server = PrivatePostgres()
    yield server
    server.close()


@pytest.fixture
def on_private_postgres(private_postgres, redis_url, simulator, tmp_path):
    url = private_postgres.create_database(f"aisystant_{time.monotonic_ns()}")
    upgrade(url)
    stack = LiveStack("postgresql", url, redis_url, simulator, tmp_path)
    yield stack
    stack.stop()


def slow_question(stack, tokens_per_second):
    tag = marker()
    script(stack.simulator_url, tag, [{"reply_tokens": REPLY_TOKENS, "tokens_per_second": tokens_per_second,
                                       "repeat": True}])
    return f"Why is etcd slow? {tag}"


def expected_answer(question):
    return "".join(answer_tokens(question, REPLY_TOKENS))


def wait_until_asked(stack, question, timeout=20):
    deadline = time.monotonic() + timeout
    while not upstream_requests(stack.simulator_url, question) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert upstream_requests(stack.simulator_url, question), "the model was never asked"


def wait_for_stored(api, conversation, reply_id, timeout=60):
    """The reply once it has ended, asking again while the server answers 503."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = api.call("GET", f"/api/chat/conversations/{conversation}")
        if response.status_code == 200:
            reply = next(m for m in response.json()["data"]["messages"] if m["id"] == reply_id)
            if reply["status"] not in ("pending", "streaming"):
                return reply
        time.sleep(0.2)
    raise AssertionError(f"reply {reply_id} did not end within {timeout} s")


def test_a_reply_in_flight_when_redis_goes_away_finishes_once_it_is_back(on_private_redis, private_redis):
    api = Api(on_private_redis.url).register()
    conversation, question = api.conversation(), slow_question(on_private_redis, tokens_per_second=15)
    reply = api.send(conversation, question, wait=False).json()["data"]["assistantMessage"]
    seen = api.stream(conversation, reply["id"], until=3)

    private_redis.stop()
    time.sleep(3)
    private_redis.start()

    final = wait_for_stored(api, conversation, reply["id"])
    assert final["status"] == "complete" and final["content"] == expected_answer(question)
    resumed = api.stream(conversation, reply["id"], last_event_id=seen[-1][1])
    assert text_of(seen + resumed) == final["content"]
    assert [m["role"] for m in api.messages(conversation)] == ["user", "assistant"]


def test_workers_register_again_by_themselves_after_redis_restarts_empty(on_private_redis, private_redis):
    health = on_private_redis.url + "/api/health"
    assert requests.get(health, timeout=10).json()["data"]["workers"] == 1
    private_redis.stop()
    private_redis.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        data = requests.get(health, timeout=10).json()["data"]
        if data["workers"] == 1:
            break
        time.sleep(0.5)
    assert data["workers"] == 1


def test_a_sync_send_stored_before_redis_went_away_answers_202_with_both_messages(on_private_redis,
                                                                                  private_redis):
    api = Api(on_private_redis.url).register()
    conversation, question = api.conversation(), slow_question(on_private_redis, tokens_per_second=15)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        sending = pool.submit(api.send, conversation, question)
        wait_until_asked(on_private_redis, question)
        private_redis.stop()
        response = sending.result(timeout=30)
    private_redis.start()

    assert response.status_code == 202, response.text
    data = response.json()["data"]
    assert data["userMessage"]["content"] == question and data["assistantMessage"]["id"]
    final = wait_for_stored(api, conversation, data["assistantMessage"]["id"])
    assert final["status"] == "complete" and final["content"] == expected_answer(question)
    assert [m["role"] for m in api.messages(conversation)] == ["user", "assistant"]


def test_while_postgresql_is_away_sends_are_kept_streams_say_so_and_requests_get_503(on_private_postgres,
                                                                                      private_postgres):
    stack, api = on_private_postgres, Api(on_private_postgres.url).register()
    followed_question, waited_question = slow_question(stack, 40), slow_question(stack, 40)
    followed_conversation, waited_conversation = api.conversation(), api.conversation()
    followed = api.send(followed_conversation, followed_question, wait=False).json()["data"]["assistantMessage"]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        reading = pool.submit(api.stream, followed_conversation, followed["id"])
        sending = pool.submit(api.send, waited_conversation, waited_question)
        wait_until_asked(stack, waited_question)
        private_postgres.stop()
        response = sending.result(timeout=30)
        events = reading.result(timeout=30)
        during = api.call("GET", "/api/auth/me")
        private_postgres.start()

    assert response.status_code == 202, response.text
    data = response.json()["data"]
    assert data["userMessage"]["content"] == waited_question and data["assistantMessage"]["id"]
    assert events[-1][0] == "error" and events[-1][2]["code"] == "service_unavailable"
    followed_final = wait_for_stored(api, followed_conversation, followed["id"])
    resumed = api.stream(followed_conversation, followed["id"], last_event_id=events[-2][1])
    assert text_of(events + resumed) == followed_final["content"] == expected_answer(followed_question)
    waited_final = wait_for_stored(api, waited_conversation, data["assistantMessage"]["id"])
    assert waited_final["status"] == "complete" and waited_final["content"] == expected_answer(waited_question)
    assert during.status_code == 503 and during.json()["code"] == "service_unavailable"
    assert "Retry-After" in during.headers


def test_an_outage_is_logged_a_line_at_a_time_without_tracebacks(on_private_redis, private_redis):
    """What the operator reads during an outage: what could not be reached, one line per
    failure. A traceback for each refused request and each background step (the first
    outage under load logged about 430 of them in 10 seconds) buries that line."""
    stack, api = on_private_redis, Api(on_private_redis.url).register()
    conversation, question = api.conversation(), slow_question(stack, tokens_per_second=15)
    reply = api.send(conversation, question, wait=False).json()["data"]["assistantMessage"]
    wait_until_asked(stack, question)

    private_redis.stop()
    refused = [api.call("GET", "/api/chat/conversations") for _ in range(3)]
    time.sleep(3)  # the worker's background steps (leases, cancels, heartbeats) meet the outage
    private_redis.start()

    assert [response.status_code for response in refused] == [503, 503, 503]
    assert wait_for_stored(api, conversation, reply["id"])["status"] == "complete"
    server_log, worker_log = stack.server.output(), stack.workers[0].output()
    assert "rate limit unavailable" in server_log and "could not refresh the lease" in worker_log
    assert "Traceback" not in server_log and "Traceback" not in worker_log
