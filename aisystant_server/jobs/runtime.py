"""Keeping replies alive, stoppable and never lost, in whichever process runs them.

- Lease: a reply being produced holds `aisystant:lease:{id}` in Redis, valued with its
  attempt's own token and refreshed by one greenlet for every reply of the process. A
  process that dies (SIGKILL, OOM, power) stops refreshing; its leases expire after
  `lease_seconds`. Refresh and release compare the token first (one Lua script each), so
  an attempt never extends or frees its successor's lease, and an attempt that finds its
  lease gone (Redis lost it, its process stalled) stops itself instead of competing.
- Reaper: every `reaper_interval`, one process (a Redis lock elects it) looks for replies
  still in flight that hold no lease and wait in no queue: their job was lost (its
  worker died, or Redis lost the queue), so it is enqueued again. A lost reply is thus
  redone at most `lease_seconds` + `reaper_interval` after its worker died. RQ's own
  detection of abandoned jobs takes minutes and knows nothing of our rows.
- Cancel: `POST .../cancel` publishes the reply's id; the process running that reply
  kills its greenlet, wherever it is blocked (even on a stalled upstream).
The database stays the judge: the rows' attempt numbers and statuses make a late or
duplicate attempt harmless (see services/messages.py).
"""

import logging
import uuid
from datetime import timedelta

import gevent
import redis as redis_lib

from aisystant_server.db import utcnow
from aisystant_server.jobs.queues import QUEUED_KEY, enqueue_reply, forget_queued
from aisystant_server.outages import log_failure
from aisystant_server.redis_connection import channel
from aisystant_server.services import messages

log = logging.getLogger(__name__)
LEASE_KEY = "aisystant:lease:{}"
CANCEL_CHANNEL = "cancel"
REAPER_LOCK = "aisystant:reaper-lock"
ENQUEUE_GRACE_SECONDS = 2
REAPER_PAGE = 500
# A lease that is gone (Redis restarted empty) is taken back: nobody else holds it, and
# the database's attempt numbers still decide whose write counts.
REFRESH_IF_OWNED = """local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then return redis.call('EXPIRE', KEYS[1], ARGV[2]) end
if not holder then redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2]) return 1 end
return 0"""
DELETE_IF_OWNED = """if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1]) else return 0 end"""


class ReplyCancelled(Exception):
    """Thrown into a reply's greenlet when its user cancels it."""


class LeaseLost(Exception):
    """Thrown into a reply's greenlet when another attempt may have taken the reply over."""


class Runtime:
    def __init__(self, context):
        self.context = context
        self.redis = context.redis
        self.lease_seconds = context.settings["worker.lease_seconds"]
        self.reaper_interval = context.settings["worker.reaper_interval"]
        self.in_flight = {}  # reply id -> (lease token, greenlet producing it)
        self.greenlets = []
        self._refresh_if_owned = self.redis.register_script(REFRESH_IF_OWNED)
        self._delete_if_owned = self.redis.register_script(DELETE_IF_OWNED)

    # leases

    def acquire(self, reply_id):
        """Take the reply's lease: its token, or None if a live attempt holds it."""
        token = uuid.uuid4().hex
        pipe = self.redis.pipeline(transaction=False)
        pipe.set(LEASE_KEY.format(reply_id), token, nx=True, ex=self.lease_seconds)
        # This job has left the queue, whether or not it gets the lease: one round trip.
        forget_queued(pipe, reply_id)
        if not pipe.execute()[0]:
            return None
        _, older = self.in_flight.get(reply_id, (None, None))
        if older is not None and older is not gevent.getcurrent():
            # An attempt of this process that outlived its lease (a stalled loop): it
            # would go on writing deltas under the new attempt's.
            older.kill(LeaseLost(), block=False)
        self.in_flight[reply_id] = (token, gevent.getcurrent())
        return token

    def release(self, reply_id, token):
        if self.in_flight.get(reply_id, (None,))[0] == token:
            del self.in_flight[reply_id]
        self._delete_if_owned(keys=[LEASE_KEY.format(reply_id)], args=[token])

    def keep_leases(self):
        while True:
            gevent.sleep(self.lease_seconds / 3)
            for reply_id, (token, greenlet) in list(self.in_flight.items()):
                try:
                    owned = self._refresh_if_owned(keys=[LEASE_KEY.format(reply_id)],
                                                   args=[token, self.lease_seconds])
                except redis_lib.RedisError as error:
                    log_failure(log, error, "could not refresh the lease of reply %s", reply_id)
                    continue
                if not owned:
                    log.warning("reply %s lost its lease: stopping this attempt", reply_id)
                    greenlet.kill(LeaseLost(), block=False)

    # cancel

    def _listen_for_cancels(self):
        while True:
            try:
                pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(channel(self.redis, CANCEL_CHANNEL))
                while True:
                    message = pubsub.get_message(timeout=1.0)
                    if message:
                        _, greenlet = self.in_flight.get(int(message["data"]), (None, None))
                        if greenlet is not None:
                            greenlet.kill(ReplyCancelled(), block=False)
            except redis_lib.RedisError as error:
                log_failure(log, error, "cancel listener lost Redis; reconnecting")
                gevent.sleep(1)

    # reaper

    def _reap_forever(self):
        while True:
            gevent.sleep(self.reaper_interval)
            try:
                self.reap()
            except Exception as error:  # the reaper must outlive any one bad pass
                log_failure(log, error, "reaper pass failed")

    def reap(self):
        """Enqueue again the replies whose job was lost; returns their ids."""
        if not self.redis.set(REAPER_LOCK, 1, nx=True, ex=max(1, int(self.reaper_interval))):
            return []
        # A reply younger than this may be between its commit and its enqueue.
        stale_before = utcnow() - timedelta(seconds=ENQUEUE_GRACE_SECONDS)
        lost, after = [], 0
        # Every candidate, a page at a time: a streaming reply is not touched while it
        # streams, so the healthy ones of a busy worker fill any one page.
        while True:
            with self.context.session_factory() as session:
                candidates = messages.lost_replies(session, stale_before, after, REAPER_PAGE)
            if not candidates:
                return lost
            pipe = self.redis.pipeline(transaction=False)
            for reply_id in candidates:
                pipe.exists(LEASE_KEY.format(reply_id), QUEUED_KEY.format(reply_id))
            for reply_id, alive in zip(candidates, pipe.execute()):
                if not alive:
                    log.warning("reply %s was lost (no lease, not queued): enqueuing it again", reply_id)
                    enqueue_reply(self.redis, self.context.settings, reply_id)
                    lost.append(reply_id)
            after = candidates[-1]

    def start(self):
        """Start the lease, cancel and reaper greenlets (once per process)."""
        if not self.greenlets:
            self.greenlets = [gevent.spawn(self.keep_leases), gevent.spawn(self._listen_for_cancels),
                              gevent.spawn(self._reap_forever)]
        return self


_runtime = None


def runtime(context):
    global _runtime
    if _runtime is None or _runtime.context is not context:
        _runtime = Runtime(context).start()
    return _runtime


def request_cancel(redis, reply_id):
    redis.publish(channel(redis, CANCEL_CHANNEL), reply_id)
