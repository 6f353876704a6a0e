"""One Redis reader for all the clients of this process that wait on replies.

A synchronous send waits for its reply's end, an SSE client follows its reply's text;
each used to hold a Redis connection in a blocking `XREAD` of its own stream, and read
again after every write of the worker: with 200 replies streaming, 200 connections and
2,000 reads a second. Here one thread (a greenlet under gevent) reads every followed
stream in one blocking `XREAD` and hands the new entries to their readers.

A reader added while that `XREAD` blocks is taken in at once: the hub's `XREAD` also
reads a wake-up stream of this process's own, which `_follow` writes to. A reader of a
stream the hub already reads gets what came before from an `XRANGE` first, in order.
A Redis failure reaches every reader, as it would have reached its own read.
"""

import copy
import logging
import os
import queue
import threading
import time
import uuid

import redis as redis_lib

from aisystant_server.streams import events_of

log = logging.getLogger(__name__)
# How long a reader waits without news before it is told "idle" (its caller then checks
# the database, or keeps an SSE connection alive).
IDLE_SECONDS = 5.0
_BLOCK_MS = 5_000
_WAKE_KEEP_SECONDS = 3600


class _Reader:
    def __init__(self, key):
        self.key, self.entries = key, queue.Queue()


class StreamHub:
    def __init__(self, redis):
        self.redis = redis
        # Reentrant: a reader left unfinished may be collected, and so forgotten, in the
        # hub's thread while it holds the lock.
        self._lock = threading.RLock()
        self._readers = {}  # stream key -> {reader: None}
        self._last_ids = {}  # stream key -> id of the last entry handed out
        self._new = []  # readers the hub has not taken in yet
        self._work = threading.Event()  # readers to serve
        self._blocking = False  # the hub is in (or about to enter) its XREAD
        self._pid = None  # the process the hub's thread runs in (a fork starts its own)
        self._wake_key, self._wake_id = None, "0"

    def read(self, reply, after_index=-1, timeout=None):
        """Yield (type, index, data) events of `reply`'s stream from its start, skipping
        text events up to `after_index`; ends after `done`/`error`. Every `IDLE_SECONDS`
        without news it yields ("idle", None, None); past `timeout` seconds, ("timeout",
        None, None) and ends."""
        reader = _Reader(reply.key)
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            self._follow(reader)
            while True:
                wait = IDLE_SECONDS if deadline is None else min(IDLE_SECONDS, max(deadline - time.monotonic(), 0))
                try:
                    entries = reader.entries.get(timeout=wait)
                except queue.Empty:
                    if deadline is not None and time.monotonic() >= deadline:
                        yield "timeout", None, None
                        return
                    yield "idle", None, None
                    continue
                if isinstance(entries, Exception):
                    raise entries
                for event in events_of(entries, after_index):
                    yield event
                    if event[0] in ("done", "error"):
                        return
        finally:
            self._forget(reader)

    def _follow(self, reader):
        with self._lock:
            self._start()
            self._new.append(reader)
            blocking = self._blocking
            self._work.set()
        if blocking:
            with self.redis.pipeline(transaction=False) as pipe:
                pipe.xadd(self._wake_key, {"w": 1}, maxlen=1, approximate=False)
                pipe.expire(self._wake_key, _WAKE_KEEP_SECONDS)
                pipe.execute()

    def _forget(self, reader):
        with self._lock:
            if reader in self._new:
                self._new.remove(reader)
            readers = self._readers.get(reader.key, {})
            readers.pop(reader, None)
            if not readers:
                self._readers.pop(reader.key, None)
                self._last_ids.pop(reader.key, None)

    def _start(self):
        if self._pid == os.getpid():
            return
        self._pid, self._wake_key = os.getpid(), f"aisystant:stream-hub:{uuid.uuid4().hex}"
        self._readers, self._last_ids, self._new = {}, {}, []
        threading.Thread(target=self._run, name="stream-hub", daemon=True).start()

    def _run(self):
        self._wake_id = "0"
        while True:
            try:
                self._serve()
            except Exception as error:  # noqa: BLE001 - every reader hears of it, as from its own read
                if not isinstance(error, redis_lib.RedisError):
                    log.exception("stream hub: unexpected failure; its readers are told")
                    time.sleep(0.1)
                self._fail_all(error)

    def _serve(self):
        """One turn: take in new readers, wait for news, hand it out."""
        with self._lock:
            catch_up = self._take_in()
            self._blocking = bool(self._readers)
            if not self._blocking:
                self._work.clear()
            streams = {self._wake_key: self._wake_id, **self._last_ids}
        if not self._blocking:
            self._work.wait()
            return
        for reader, last_id in catch_up:
            earlier = self.redis.xrange(reader.key, "-", last_id)
            if earlier:
                reader.entries.put(earlier)
        answer = self.redis.xread(streams, count=500, block=_BLOCK_MS) or ()
        for key, entries in answer.items() if isinstance(answer, dict) else answer:  # RESP3 answers a map
            key = key.decode()
            if key == self._wake_key:
                self._wake_id = entries[-1][0]
                continue
            with self._lock:
                if key not in self._last_ids:  # its readers are gone
                    continue
                self._last_ids[key] = entries[-1][0]
                readers = list(self._readers[key])
            for reader in readers:
                reader.entries.put(entries)

    def _take_in(self):
        """Add the new readers (under the lock). A stream the hub reads already will be
        read from where the hub is: its new readers first get what came before, as
        (reader, last id) pairs for an XRANGE; others are read from their start."""
        catch_up = []
        for reader in self._new:
            last_id = self._last_ids.get(reader.key, "0")
            if last_id != "0":
                catch_up.append((reader, last_id))
            self._readers.setdefault(reader.key, {})[reader] = None
            self._last_ids[reader.key] = last_id
        self._new = []
        return catch_up

    def _fail_all(self, error):
        with self._lock:
            readers = [reader for followed in self._readers.values() for reader in followed]
            self._readers, self._last_ids = {}, {}
        for reader in readers:
            reader.entries.put(_own_copy(error))


def _own_copy(error):
    """A copy of `error` for one reader: raised in every waiting request, one exception
    would carry all their tracebacks."""
    try:
        return copy.copy(error)
    except Exception:  # noqa: BLE001 - an exception that cannot be rebuilt from its args
        return error


def includeme(config):
    config.registry["streams.hub"] = StreamHub(config.registry["redis"])
