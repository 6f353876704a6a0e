"""What a process publishes for the Socket.IO processes (events.PipelinedRedisManager)."""

import json
import logging
import socket
import time

import redis

from aisystant_server import events
from aisystant_server.redis_connection import channel


def published(url, count, timeout=10):
    """Starts listening on the deployment's Socket.IO channel; a function returning the
    next `count` messages published there, decoded."""
    listener = redis.Redis.from_url(url).pubsub(ignore_subscribe_messages=True)
    listener.subscribe(channel(url, "socketio"))

    def messages():
        received, deadline = [], time.monotonic() + timeout
        while len(received) < count and time.monotonic() < deadline:
            message = listener.get_message(timeout=1)
            if message:
                received.append(json.loads(message["data"]))
        listener.close()
        return received
    listener.get_message(timeout=1)  # the subscription, confirmed before anything is published
    return messages


def test_a_burst_of_events_leaves_in_the_order_it_was_emitted(redis_databases):
    url = redis_databases[0]
    received = published(url, 1000)
    publisher = events.manager({"redis.url": url}, write_only=True)
    for index in range(1000):
        events.emit(publisher, "message_delta", {"index": index}, 7)
    assert events.drain(10)
    messages = received()
    assert [message["data"][0]["index"] for message in messages] == list(range(1000))
    assert {(message["event"], message["room"]) for message in messages} == {("message_delta", "conversation:7")}


def test_whoever_emits_goes_on_while_redis_is_slow_and_drain_waits_for_what_is_published(caplog):
    with socket.create_server(("127.0.0.1", 0)) as silent:  # takes connections, never answers
        publisher = events.manager({"redis.url": f"redis://127.0.0.1:{silent.getsockname()[1]}/0"},
                                   write_only=True)
        started = time.monotonic()
        events.emit(publisher, "typing", {"conversation_id": 7, "username": "AiSystant"}, 7)
        assert time.monotonic() - started < 0.5
        assert not events.drain(1)
    with caplog.at_level(logging.ERROR, logger="aisystant_server.events"):
        assert events.drain(15)  # the connections are refused now: it gives up
    assert "could not publish 1 Socket.IO messages to Redis" in caplog.text
