"""The stream hub on the embedded mode's in-process Redis (fakeredis), in real threads."""

import concurrent.futures
from datetime import datetime, timezone

import fakeredis
import pytest
import redis

from aisystant_server import streams
from aisystant_server.stream_hub import StreamHub


@pytest.fixture
def connection():
    return fakeredis.FakeRedis(server=fakeredis.FakeServer())


def _reply(reply_id):
    return streams.ReplyRef(reply_id, 1, datetime(2026, 12, 2, tzinfo=timezone.utc))


def _finished(connection, reply, text):
    connection.xadd(reply.key, {"type": "delta", "index": 0, "delta": text})
    streams.finish(connection, reply, "done", {"id": reply.id, "content": text})


def test_readers_that_finished_leave_nothing_followed(connection):
    hub = StreamHub(connection)
    replies = [_reply(n) for n in range(1, 6)]
    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        readings = [pool.submit(lambda reply=reply: list(hub.read(reply, timeout=10))) for reply in replies * 2]
        for reply in replies:
            _finished(connection, reply, f"answer {reply.id}")
        results = [reading.result(timeout=20) for reading in readings]
    assert [events[0] for events in results] == [("delta", 0, f"answer {n}") for n in range(1, 6)] * 2
    assert all(events[-1][0] == "done" for events in results)
    # Not one stream still read on behalf of readers that are gone.
    assert hub._readers == {} and hub._last_ids == {}


def test_a_failed_read_reaches_its_readers_and_the_hub_serves_the_next_ones(connection):
    hub = StreamHub(connection)
    broken, sound = _reply(1), _reply(2)
    connection.set(broken.key, "not a stream")
    # Redis answers WRONGTYPE; fakeredis fails inside itself (AttributeError): a failure
    # the hub did not expect, which must not end it either.
    with pytest.raises((redis.ResponseError, AttributeError)):
        list(hub.read(broken, timeout=10))
    _finished(connection, sound, "fine")
    assert [kind for kind, _, _ in hub.read(sound, timeout=10)] == ["delta", "done"]
