"""Many clients of one server process waiting on replies, read by one Redis reader."""

import concurrent.futures
import threading
import time

import pytest

from tests.functional.live import Api, marker, script

pytestmark = pytest.mark.slow


@pytest.fixture
def api(live_server):
    return Api(live_server.url).register()


def _text(events):
    return "".join(data["delta"] for kind, _, data in events if kind == "delta")


def test_a_second_reader_of_a_reply_being_read_gets_it_from_its_start(api, live_server):
    conversation, tag = api.conversation(), marker()
    script(live_server.simulator_url, tag, [{"reply_tokens": 60, "tokens_per_second": 20}])
    reply = api.send(conversation, f"Slowly {tag}", wait=False).json()["data"]["assistantMessage"]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        first = pool.submit(api.stream, conversation, reply["id"])
        # This one joins a stream the process already reads, and leaves after two deltas;
        # the next joins later still, mid-reply.
        assert len(api.stream(conversation, reply["id"], until=2)) == 2
        second = pool.submit(api.stream, conversation, reply["id"])
        first, second = first.result(timeout=60), second.result(timeout=60)
    stored = api.message(conversation, reply["id"])
    assert stored["status"] == "complete"
    assert _text(first) == _text(second) == stored["content"]
    assert first[-1][0] == second[-1][0] == "done"


def test_a_reader_that_comes_while_other_replies_are_silent_is_served_at_once(api, live_server):
    silent_conversation, quick_conversation, tag = api.conversation(), api.conversation(), marker()
    script(live_server.simulator_url, tag, [{"ttft_ms": 4000}])
    silent = api.send(silent_conversation, f"Think first {tag}", wait=False).json()["data"]["assistantMessage"]
    first_delta_at = []
    started = threading.Event()

    def follow_the_silent_reply():
        started.set()
        events = api.stream(silent_conversation, silent["id"], until=1)
        first_delta_at.append(time.monotonic())
        return events

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        silent_events = pool.submit(follow_the_silent_reply)
        started.wait()
        time.sleep(0.5)  # the process now waits on the silent reply's stream
        quick = api.send(quick_conversation, f"Quick {marker()}")
        quick_answered_at = time.monotonic()
        assert silent_events.result(timeout=60)[0][0] == "delta"
    assert quick.status_code == 200, quick.text
    assert quick.json()["data"]["assistantMessage"]["status"] == "complete"
    # Not after the silent reply spoke: a new reader must not wait for another stream's news.
    assert quick_answered_at < first_delta_at[0]
