"""A reply's stream: its text as indexed events, then `done` or `error`, in a Redis Stream.

The waiting REST request, the SSE endpoint and Socket.IO clients read the same stream,
so they agree on what was said; a reader that connects late, or again, reads it from
the start or from the index it last saw. It is kept for a while after the end so a
finished reply replays; past that, the database has the final message.

The rules that let every reader, fresh or resuming, end with exactly the stored text:

- The key names the row, not just its id (`aisystant:reply:<id>:<created_at>`): a stream
  can never be read as another reply's, whatever became of the ids.
- Indices never restart. A `delta` appends text; a `reset` (`{index, text}`) replaces
  all the text so far. A new attempt (its worker was lost) continues the stream after
  its last index, with the text already streamed as the model's prefix, so readers
  notice nothing. Where that text is unknown (Redis lost the stream), the attempt opens
  with a `reset` at an index no earlier attempt can have reached.
- A write that fails (Redis away) is not lost: the text stays buffered, and the next
  write that gets through is a `reset` carrying the whole text, since Redis may have
  come back without the earlier entries.

Writers coalesce deltas: the first piece of text goes out at once (time to first token
is what a user feels), later pieces at most every `FLUSH_SECONDS`, so a fast model
costs ten writes a second per reply instead of hundreds (each a stream entry and an event);
the last piece goes with the reply's end, once the outcome is stored.
"""

import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import redis as redis_lib

from aisystant_server import events

log = logging.getLogger(__name__)
# A stream in flight lives this long after its last write.
KEEP_SECONDS = 3600
# An ended one, long enough for its readers to read the end (a later one is served from
# the database, which has the same text): Redis holds replies of minutes, not of an hour.
ENDED_KEEP_SECONDS = 300
# A deleted reply's stream stays just long enough for its readers to learn it is gone.
GONE_KEEP_SECONDS = 60
FLUSH_SECONDS = 0.1
# Above any index an attempt can reach (one per coalesced write): where an attempt
# cannot know the indices of the one before, it starts past them.
INDEX_STRIDE = 1_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True)
class ReplyRef:
    """What names one reply row for everything kept outside the database."""

    id: int
    conversation_id: int
    created_at: datetime

    @classmethod
    def of(cls, message):
        return cls(message.id, message.conversation_id, message.created_at)

    @property
    def key(self):
        micros = (self.created_at - _EPOCH) // timedelta(microseconds=1)
        return f"aisystant:reply:{self.id}:{micros}"


def replay(entries):
    """(text, next index) from a stream's entries, as a reader would end up with."""
    text, next_index = "", 0
    for _, fields in entries:
        kind = fields[b"type"]
        if kind == b"delta":
            text += fields[b"delta"].decode()
        elif kind == b"reset":
            text = fields[b"text"].decode()
        else:
            continue
        next_index = int(fields[b"index"]) + 1
    return text, next_index


class ReplyWriter:
    """Appends one attempt's text to its reply's stream and emits it to socket clients."""

    def __init__(self, redis, emitter, reply, attempt):
        self.redis, self.emitter, self.reply = redis, emitter, reply
        # A first attempt has nothing before it to continue: no round trip to learn so.
        entries = redis.xrange(reply.key) if attempt > 1 else []
        # Text an earlier attempt streamed: this attempt continues it (see `prefix`).
        self.prefix, self.index = replay(entries)
        self.parts, self.buffer, self.last_flush = [self.prefix], [], 0.0
        self.first_text_at = None
        self._reset_due = not entries and attempt > 1
        if self._reset_due:
            self.index = (attempt - 1) * INDEX_STRIDE
            self.flush(force=True)
        # The model is asked to continue the prefix stripped of its trailing whitespace
        # (the API refuses it); that whitespace was shown already, so it is not repeated.
        self._skip_spaces = len(self.prefix) - len(self.prefix.rstrip())

    @property
    def model_prefix(self):
        """The assistant text the model must continue, or "" for a fresh reply."""
        return self.prefix.rstrip()

    def write(self, text):
        while self._skip_spaces and text and text[0].isspace():
            text, self._skip_spaces = text[1:], self._skip_spaces - 1
        if not text:
            return
        self._skip_spaces = 0
        first = self.first_text_at is None
        if first:
            self.first_text_at = time.monotonic()
        self.buffer.append(text)
        if first or time.monotonic() - self.last_flush >= FLUSH_SECONDS:
            self.flush()

    def flush(self, force=False, end=None):
        """Send what is buffered; on a Redis failure keep it for the next flush. With `end`,
        the reply's final event as `finish` takes it (type, payload), appended in the same
        round trip: once the outcome is stored, where the text is safe anyway."""
        entry = self._pending(force)
        if entry is None and end is None:
            return
        try:
            pipe = self.redis.pipeline(transaction=False)
            if entry is not None:
                pipe.xadd(self.reply.key, entry[1])
            if end is not None:
                pipe.xadd(self.reply.key, _end_fields(*end))
            pipe.expire(self.reply.key, KEEP_SECONDS if end is None else ENDED_KEEP_SECONDS)
            pipe.execute()
        except redis_lib.RedisError as error:
            if end is not None:
                _end_lost(self.reply, error)
            if entry is not None:
                self._keep(error)
            return
        if entry is not None:
            self._sent(*entry)

    def _pending(self, force):
        """(event, stream fields, event payload, delta) of what is buffered, or None."""
        if not self.buffer and not force:
            return None
        delta = "".join(self.buffer)
        if self._reset_due:
            return ("message_reset", {"type": "reset", "index": self.index, "text": self.text},
                    {"index": self.index, "text": self.text}, delta)
        return ("message_delta", {"type": "delta", "index": self.index, "delta": delta},
                {"index": self.index, "delta": delta}, delta)

    def _keep(self, error):
        if not self._reset_due:
            log.warning("reply %s: stream write failed (%s); text kept for the next write", self.reply.id, error)
        self._reset_due = True
        # The write may have landed before the connection broke: the reset takes the
        # next index, or readers who got this one would ignore it.
        self.index += 1

    def _sent(self, event, _fields, payload, delta):
        self.parts.append(delta)
        self.buffer, self._reset_due = [], False
        events.emit(self.emitter, event, {"conversation_id": self.reply.conversation_id,
                                        "message_id": self.reply.id, **payload}, self.reply.conversation_id)
        self.index += 1
        self.last_flush = time.monotonic()

    @property
    def started(self):
        """True once this attempt has produced text (a retry would show a second beginning)."""
        return self.first_text_at is not None

    @property
    def text(self):
        return "".join(self.parts) + "".join(self.buffer)


def finish(redis, reply, event_type, payload, keep_seconds=ENDED_KEEP_SECONDS):
    """Append the final `done` (payload: the message) or `error` ({code, message}) event.

    Best effort: if Redis is away, readers learn the end from the database.
    """
    try:
        pipe = redis.pipeline()
        pipe.xadd(reply.key, _end_fields(event_type, payload))
        pipe.expire(reply.key, keep_seconds)
        pipe.execute()
    except redis_lib.RedisError as error:
        _end_lost(reply, error)


def _end_fields(event_type, payload):
    return {"type": event_type, "data": json.dumps(payload)}


def _end_lost(reply, error):
    log.warning("reply %s: could not end its stream (%s); readers will find the end in the database",
                reply.id, error)


def events_of(entries, after_index=-1):
    """(type, index, data) of stream entries, skipping text events up to `after_index`."""
    for _, fields in entries:
        kind = fields[b"type"].decode()
        if kind in ("delta", "reset"):
            index = int(fields[b"index"])
            if index > after_index:
                yield kind, index, fields[b"delta" if kind == "delta" else b"text"].decode()
        else:
            yield kind, None, json.loads(fields[b"data"])


def partial_text(redis, reply):
    """The text streamed so far (for a reply cancelled mid-way)."""
    return replay(redis.xrange(reply.key))[0]


def forget(redis, replies):
    """Delete the streams of replies whose rows are gone."""
    keys = [reply.key for reply in replies]
    if keys:
        redis.delete(*keys)
