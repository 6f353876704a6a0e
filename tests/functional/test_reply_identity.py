"""Nothing kept outside the database (streams, jobs, leases) ever meets a stranger's row.

Found by trying the product with two users: delete the newest conversation, create
another, send. Ids must never be reused, and what Redis holds for deleted messages goes
with them.
"""

import time

import pytest
import redis

from tests.functional.live import Api, marker, script, upstream_requests

pytestmark = pytest.mark.slow


def test_a_send_after_someone_deleted_the_newest_conversation_gets_its_own_reply(live_server):
    alice, bob = Api(live_server.url).register(), Api(live_server.url).register()
    hers = alice.conversation()
    assert alice.send(hers, f"Alice's question {marker()}").status_code == 200
    assert alice.call("DELETE", f"/api/chat/conversations/{hers}").status_code == 200

    his, tag = bob.conversation(), marker()
    response = bob.send(his, f"Bob's question {tag}")

    assert response.status_code == 200, response.text
    reply = response.json()["data"]["assistantMessage"]
    assert reply["status"] == "complete" and tag in reply["content"]


def test_ids_are_never_reused_after_a_delete(live_server):
    alice = Api(live_server.url).register()
    first = alice.conversation()
    sent = alice.send(first, f"Hello {marker()}").json()["data"]
    alice.call("DELETE", f"/api/chat/conversations/{first}")
    second = alice.conversation()
    again = alice.send(second, f"Hello again {marker()}", wait=False).json()["data"]
    assert second > first
    assert again["userMessage"]["id"] > sent["assistantMessage"]["id"]


def test_a_title_job_whose_conversation_was_deleted_titles_nobody_elses(live_server):
    alice, bob = Api(live_server.url).register(), Api(live_server.url).register()
    hers, tag = alice.conversation(), marker()
    # The reply at once; the title (the job that runs after the first exchange) slowly.
    script(live_server.simulator_url, tag, [{}, {"ttft_ms": 1500}])
    assert alice.send(hers, f"My secret question about payroll {tag}").status_code == 200
    # Deleted while the title job waits for the model (deleted before, the job has nothing to title).
    deadline = time.monotonic() + 20
    while not upstream_requests(live_server.simulator_url, tag, streamed=False) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert upstream_requests(live_server.simulator_url, tag, streamed=False), "the title job never asked the model"
    assert alice.call("DELETE", f"/api/chat/conversations/{hers}").status_code == 200
    his = bob.conversation()

    titles = set()
    deadline = time.monotonic() + 4  # the title answer takes 1.5 s; then the job would write
    while time.monotonic() < deadline:
        titles.add(bob.call("GET", f"/api/chat/conversations/{his}").json()["data"]["conversation"]["title"])
        time.sleep(0.1)
    assert titles == {"Nouvelle conversation"}


@pytest.mark.distributed
def test_deleting_a_conversation_removes_the_streams_of_its_replies(live_server):
    alice = Api(live_server.url).register()
    conversation = alice.conversation()
    reply = alice.send(conversation, f"Hello {marker()}").json()["data"]["assistantMessage"]
    connection = redis.Redis.from_url(live_server.redis_url)
    assert connection.keys(f"aisystant:reply:{reply['id']}:*")
    assert alice.call("DELETE", f"/api/chat/conversations/{conversation}").status_code == 200
    assert connection.keys(f"aisystant:reply:{reply['id']}:*") == []
    connection.close()
