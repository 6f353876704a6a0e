"""A reply's stream: its deltas, then `done` or `error`, in a Redis Stream per reply.

The waiting REST request, the SSE endpoint (and later Socket.IO) read the same stream,
so they agree on what was said; a reader that connects late, or again, reads it from
the start or from the index it last saw. It is kept for a while after the end so a
finished reply replays; past that, the database has the final message.

Writers coalesce deltas: the first piece of text goes out at once (time to first
token is what a user feels), later pieces at most every `FLUSH_SECONDS`, so a fast
model costs tens of writes a second per reply instead of hundreds.
"""

import json
import time

from aisystant_server import events

STREAM_KEY = "aisystant:reply:{}"
KEEP_SECONDS = 3600
FLUSH_SECONDS = 0.05
BLOCK_MS = 5_000


def stream_key(message_id):
    return STREAM_KEY.format(message_id)


class ReplyWriter:
    """Appends one reply's deltas to its stream and emits each as `message_delta`."""

    def __init__(self, redis, message_id, conversation_id):
        self.redis, self.key = redis, stream_key(message_id)
        self.message_id, self.conversation_id = message_id, conversation_id
        self.index, self.buffer, self.last_flush, self.parts = 0, [], 0.0, []
        self.first_text_at = None
        # A new attempt starts the stream over (see README: lost workers).
        self.redis.delete(self.key)

    def write(self, text):
        if not text:
            return
        if self.first_text_at is None:
            self.first_text_at = time.monotonic()
        self.buffer.append(text)
        if self.index == 0 or time.monotonic() - self.last_flush >= FLUSH_SECONDS:
            self.flush()

    def flush(self):
        if not self.buffer:
            return
        delta = "".join(self.buffer)
        self.buffer = []
        self.parts.append(delta)
        pipe = self.redis.pipeline(transaction=False)
        pipe.xadd(self.key, {"type": "delta", "index": self.index, "delta": delta})
        pipe.expire(self.key, KEEP_SECONDS)
        pipe.publish(events.CHANNEL, events.encode("message_delta", {
            "conversation_id": self.conversation_id, "message_id": self.message_id,
            "index": self.index, "delta": delta}, self.conversation_id))
        pipe.execute()
        self.index += 1
        self.last_flush = time.monotonic()

    @property
    def started(self):
        return bool(self.parts or self.buffer)

    @property
    def text(self):
        return "".join(self.parts) + "".join(self.buffer)


def finish(redis, message_id, event_type, payload):
    """Append the final `done` (payload: the message) or `error` ({code, message}) event."""
    key = stream_key(message_id)
    pipe = redis.pipeline()
    pipe.xadd(key, {"type": event_type, "data": json.dumps(payload)})
    pipe.expire(key, KEEP_SECONDS)
    pipe.execute()


def read(redis, message_id, after_index=-1, timeout=None):
    """Yield (type, index, data) events from the start, skipping deltas up to `after_index`;
    ends after `done`/`error`, or yields ("timeout", None, None) when nothing came in time."""
    key, last_id = stream_key(message_id), "0"
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        block = BLOCK_MS if deadline is None else max(1, int(min(BLOCK_MS / 1000, deadline - time.monotonic()) * 1000))
        answer = redis.xread({key: last_id}, count=500, block=block)
        if not answer:
            if deadline is not None and time.monotonic() >= deadline:
                yield "timeout", None, None
                return
            yield "idle", None, None
            continue
        for entry_id, fields in answer[0][1]:
            last_id = entry_id
            kind = fields[b"type"].decode()
            if kind == "delta":
                index = int(fields[b"index"])
                if index > after_index:
                    yield "delta", index, fields[b"delta"].decode()
            else:
                yield kind, None, json.loads(fields[b"data"])
                return


def partial_text(redis, message_id):
    """The text streamed so far (for a reply cancelled mid-way)."""
    entries = redis.xrange(stream_key(message_id))
    return "".join(fields[b"delta"].decode() for _, fields in entries if fields[b"type"] == b"delta")
