"""How a reply's writer appends to its stream, on the real Redis (streams.ReplyWriter)."""

import concurrent.futures
import time
import uuid
from datetime import datetime, timezone

import redis

from aisystant_server import events, streams


def test_a_reader_waiting_on_the_stream_gets_the_last_text_and_the_end_in_one_read(redis_databases):
    url = redis_databases[0]
    connection = redis.Redis.from_url(url)
    reply = streams.ReplyRef(41, 7, datetime(2026, 12, 3, tzinfo=timezone.utc))
    connection.delete(reply.key)
    writer = streams.ReplyWriter(connection, events.manager({"redis.url": url}, write_only=True), reply, attempt=1)
    writer.write("The first words")  # the first text goes out at once
    writer.buffer.append(", and the rest")  # what a fast model sends before the next flush
    last_id = connection.xrevrange(reply.key, count=1)[0][0]
    reader = redis.Redis.from_url(url, client_name=f"reader-{uuid.uuid4().hex}")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        # What the API's stream hub does while a sender waits: a blocking read after the
        # last entry it saw, woken by the next write.
        reading = pool.submit(reader.xread, {reply.key: last_id}, block=10_000)
        _until_blocked(connection, reader.get_connection_kwargs()["client_name"])
        writer.flush(end=("done", {"id": reply.id, "content": writer.text}))
        [(_, entries)] = reading.result(timeout=15)
    assert [(kind, index) for kind, index, _ in streams.events_of(entries)] == [("delta", 1), ("done", None)]
    connection.delete(reply.key)


def _until_blocked(connection, name):
    """Returns once the client called `name` is blocked in its read."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if any(client["name"] == name and "b" in client["flags"] for client in connection.client_list()):
            return
        time.sleep(0.01)
    raise AssertionError("the reader never blocked")
