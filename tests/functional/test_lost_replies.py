"""A reply whose worker was lost is redone once, and every reader ends with its exact text.

The simulator continues a final assistant turn as the real API does, and its answer to a
question is deterministic, so the redone reply must equal the answer the model would have
given in one go: no word twice, none missing, for a reader that stayed, one that resumes
with Last-Event-ID and one that arrives after.
"""

from datetime import timedelta

import pytest
import redis

from aisystant_server.db import utcnow
from aisystant_server.jobs.context import JobContext
from aisystant_server.jobs.queues import QUEUED_KEY
from aisystant_server.jobs.runtime import ENQUEUE_GRACE_SECONDS, LEASE_KEY, REAPER_PAGE, Runtime
from aisystant_server.models import Message
from aisystant_server.simulator.replies import answer_tokens
from tests.functional.live import marker, script, upstream_requests
from tests.functional.test_replies import api, reply_rows  # noqa: F401  (fixture)

pytestmark = pytest.mark.slow
REPLY_TOKENS = 150


def start_slow_reply(api, live_server, first_deltas=5):
    """A reply of about 5 s, already streaming: (conversation, reply id, question, events seen)."""
    conversation, tag = api.conversation(), marker()
    question = f"Walk me through a node drain {tag}"
    script(live_server.simulator_url, tag, [{"reply_tokens": REPLY_TOKENS, "tokens_per_second": 30, "repeat": True}])
    reply = api.send(conversation, question, wait=False).json()["data"]["assistantMessage"]
    seen = api.stream(conversation, reply["id"], until=first_deltas)
    assert [event for event, _, _ in seen] == ["delta"] * first_deltas
    return conversation, reply["id"], question, seen


def text_of(events, text=""):
    """What a reader shows after these events: deltas append, a reset replaces."""
    for event, _, data in events:
        if event == "delta":
            text += data["delta"]
        elif event == "reset":
            text = data["text"]
    return text


def indices(events):
    return [int(event_id) for event, event_id, _ in events if event in ("delta", "reset")]


def question_of(api, conversation):
    return api.messages(conversation)[0]["id"]


def expected_answer(question):
    return "".join(answer_tokens(question, REPLY_TOKENS))


@pytest.mark.distributed
def test_a_reply_redone_after_its_worker_died_continues_its_text_for_every_reader(api, live_server):
    conversation, reply_id, question, seen = start_slow_reply(api, live_server)
    live_server.workers[-1].kill()
    live_server.start_worker()

    resumed = api.stream(conversation, reply_id, last_event_id=seen[-1][1])
    fresh = api.stream(conversation, reply_id)

    final = api.wait_for(conversation, reply_id)
    assert final["status"] == "complete" and final["content"] == expected_answer(question)
    assert text_of(seen + resumed) == final["content"]
    assert text_of(fresh) == final["content"]
    assert "reset" not in [event for event, _, _ in fresh]
    assert indices(fresh) == sorted(set(indices(fresh)))
    assert indices(resumed)[0] > int(seen[-1][1])
    assert len(upstream_requests(live_server.simulator_url, question)) == 2
    assert reply_rows(live_server, question_of(api, conversation)) == [("complete", 2)]


@pytest.mark.distributed
def test_a_redone_reply_whose_stream_redis_lost_resets_its_readers_to_the_exact_text(api, live_server):
    conversation, reply_id, question, seen = start_slow_reply(api, live_server)
    live_server.workers[-1].kill()
    connection = redis.Redis.from_url(live_server.redis_url)
    connection.delete(*connection.keys(f"aisystant:reply:{reply_id}:*"))
    connection.close()
    live_server.start_worker()

    resumed = api.stream(conversation, reply_id, last_event_id=seen[-1][1])

    final = api.wait_for(conversation, reply_id)
    assert final["status"] == "complete" and final["content"] == expected_answer(question)
    assert [event for event, _, _ in resumed].count("reset") == 1
    assert text_of(seen + resumed) == final["content"]
    assert indices(resumed)[0] > int(seen[-1][1])


@pytest.mark.embedded
def test_an_embedded_server_restarted_mid_reply_finishes_it_once_with_the_whole_text(api, live_server):
    conversation, reply_id, question, seen = start_slow_reply(api, live_server)
    live_server.restart_server()

    final = api.wait_for(conversation, reply_id)
    assert final["status"] == "complete"
    # The in-process Redis died with the server: the stream starts over with a reset.
    resumed = api.stream(conversation, reply_id, last_event_id=seen[-1][1])
    assert text_of(seen + resumed) == final["content"] == expected_answer(question)
    assert reply_rows(live_server, question_of(api, conversation)) == [("complete", 2)]


def insert_exchange(registry, conversation_id, user_id, status, updated_at):
    """A question and its reply row as a worker leaves them: (question id, reply id)."""
    with registry["db.session_factory"]() as session, session.begin():
        question = Message(conversation_id=conversation_id, user_id=user_id, role="user", content="Why?")
        session.add(question)
        session.flush()
        reply = Message(conversation_id=conversation_id, role="assistant", content="", status=status,
                        reply_to_id=question.id, attempt=1, updated_at=updated_at)
        session.add(reply)
        session.flush()
        return reply.id


def test_the_reaper_requeues_a_reply_as_soon_as_its_lease_is_missing(testapp, account):
    registry = testapp.app.registry
    conversation = testapp.post_json("/api/chat/conversations", {}, headers=account.headers).json["data"]["id"]
    moment_ago = utcnow() - timedelta(seconds=ENQUEUE_GRACE_SECONDS + 1)
    orphan = insert_exchange(registry, conversation, account.id, "streaming", moment_ago)
    leased = insert_exchange(registry, conversation, account.id, "streaming", moment_ago)
    just_sent = insert_exchange(registry, conversation, account.id, "pending", utcnow())
    runtime = Runtime(JobContext(registry.settings, registry["redis"], registry["db.autocommit_session_factory"], None))
    registry["redis"].set(LEASE_KEY.format(leased), "a live attempt")

    assert runtime.reap() == [orphan]
    assert registry["redis"].exists(QUEUED_KEY.format(orphan))
    assert not registry["redis"].exists(QUEUED_KEY.format(just_sent))


def test_the_reaper_finds_a_lost_reply_behind_more_healthy_ones_than_it_reads_at_once(testapp, account):
    registry = testapp.app.registry
    conversation = testapp.post_json("/api/chat/conversations", {}, headers=account.headers).json["data"]["id"]
    moment_ago = utcnow() - timedelta(seconds=ENQUEUE_GRACE_SECONDS + 1)
    # A busy worker: its replies stream (their rows untouched meanwhile), each holding its lease.
    healthy = [insert_exchange(registry, conversation, account.id, "streaming", moment_ago)
               for _ in range(REAPER_PAGE + 1)]
    orphan = insert_exchange(registry, conversation, account.id, "streaming", moment_ago)
    leases = registry["redis"].pipeline()
    for reply_id in healthy:
        leases.set(LEASE_KEY.format(reply_id), "a live attempt")
    leases.execute()
    runtime = Runtime(JobContext(registry.settings, registry["redis"], registry["db.autocommit_session_factory"], None))

    assert runtime.reap() == [orphan]


@pytest.mark.distributed
def test_a_finished_reply_whose_stream_is_gone_still_ends_every_reader_with_its_text(api, live_server):
    conversation = api.conversation()
    reply = api.send(conversation, f"Replay me {marker()}").json()["data"]["assistantMessage"]
    connection = redis.Redis.from_url(live_server.redis_url)
    connection.delete(*connection.keys(f"aisystant:reply:{reply['id']}:*"))
    connection.close()

    fresh = api.stream(conversation, reply["id"])
    resumed = api.stream(conversation, reply["id"], last_event_id=3)

    assert text_of(fresh) == text_of(resumed, "partial text seen before") == reply["content"]
    assert [event for event, _, _ in resumed] == ["reset", "done"] and indices(resumed) == [4]
