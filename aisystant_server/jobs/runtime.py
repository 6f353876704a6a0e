"""Keeping replies alive, stoppable and never lost, in whichever process runs them.

- Lease: a reply being produced holds `aisystant:lease:{id}` in Redis, refreshed by one
  greenlet for every reply of the process. A process that dies (SIGKILL, OOM, power)
  stops refreshing; its leases expire after `lease_seconds`.
- Reaper: every `reaper_interval`, one process (a Redis lock elects it) looks for replies
  still in flight that have not moved for a while, hold no lease and wait in no queue:
  their job was lost, so it is enqueued again. RQ's own detection of abandoned jobs
  takes minutes and knows nothing of our rows; this one needs under a minute.
- Cancel: `POST .../cancel` publishes the reply's id; the process running that reply
  kills its greenlet, wherever it is blocked (even on a stalled upstream).
The database stays the judge: the rows' attempt numbers and statuses make a late or
duplicate attempt harmless (see services/messages.py).
"""

import logging
from datetime import timedelta

import gevent
import redis as redis_lib

from aisystant_server.db import utcnow
from aisystant_server.jobs.queues import QUEUED_KEY, enqueue_reply
from aisystant_server.services import messages

log = logging.getLogger(__name__)
LEASE_KEY = "aisystant:lease:{}"
CANCEL_CHANNEL = "aisystant:cancel"
REAPER_LOCK = "aisystant:reaper-lock"


class ReplyCancelled(Exception):
    """Thrown into a reply's greenlet when its user cancels it."""


class Runtime:
    def __init__(self, context):
        self.context = context
        self.redis = context.redis
        self.lease_seconds = context.settings["worker.lease_seconds"]
        self.reaper_interval = context.settings["worker.reaper_interval"]
        self.in_flight = {}  # reply id -> greenlet producing it
        self.greenlets = []

    # leases

    def acquire(self, reply_id):
        """Take the reply's lease, or False if a live attempt holds it."""
        if not self.redis.set(LEASE_KEY.format(reply_id), 1, nx=True, ex=self.lease_seconds):
            return False
        self.redis.delete(QUEUED_KEY.format(reply_id))
        self.in_flight[reply_id] = gevent.getcurrent()
        return True

    def release(self, reply_id):
        self.in_flight.pop(reply_id, None)
        self.redis.delete(LEASE_KEY.format(reply_id))

    def _refresh_leases(self):
        while True:
            gevent.sleep(self.lease_seconds / 3)
            if not self.in_flight:
                continue
            try:
                pipe = self.redis.pipeline(transaction=False)
                for reply_id in list(self.in_flight):
                    pipe.expire(LEASE_KEY.format(reply_id), self.lease_seconds)
                pipe.execute()
            except redis_lib.RedisError:
                log.exception("could not refresh reply leases")

    # cancel

    def _listen_for_cancels(self):
        while True:
            try:
                pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(CANCEL_CHANNEL)
                while True:
                    message = pubsub.get_message(timeout=1.0)
                    if message:
                        greenlet = self.in_flight.get(int(message["data"]))
                        if greenlet is not None:
                            greenlet.kill(ReplyCancelled(), block=False)
            except redis_lib.RedisError:
                log.exception("cancel listener lost Redis; reconnecting")
                gevent.sleep(1)

    # reaper

    def _reap_forever(self):
        while True:
            gevent.sleep(self.reaper_interval)
            try:
                self.reap()
            except Exception:  # the reaper must outlive any one bad pass
                log.exception("reaper pass failed")

    def reap(self):
        """Enqueue again the replies whose job was lost; returns their ids."""
        if not self.redis.set(REAPER_LOCK, 1, nx=True, ex=max(1, int(self.reaper_interval))):
            return []
        stale_before = utcnow() - timedelta(seconds=self.lease_seconds * 2)
        with self.context.session_factory() as session:
            candidates = messages.lost_replies(session, stale_before)
        lost = []
        for reply_id in candidates:
            pipe = self.redis.pipeline(transaction=False)
            pipe.exists(LEASE_KEY.format(reply_id))
            pipe.exists(QUEUED_KEY.format(reply_id))
            if any(pipe.execute()):
                continue
            log.warning("reply %s was lost (no lease, not queued): enqueuing it again", reply_id)
            enqueue_reply(self.redis, self.context.settings, reply_id)
            lost.append(reply_id)
        return lost

    def start(self):
        """Start the lease, cancel and reaper greenlets (once per process)."""
        if not self.greenlets:
            self.greenlets = [gevent.spawn(self._refresh_leases), gevent.spawn(self._listen_for_cancels),
                              gevent.spawn(self._reap_forever)]
        return self

    def stop(self):
        gevent.killall(self.greenlets, block=False)
        self.greenlets = []


_runtime = None


def runtime(context):
    global _runtime
    if _runtime is None or _runtime.context is not context:
        _runtime = Runtime(context).start()
    return _runtime


def request_cancel(redis, reply_id):
    redis.publish(CANCEL_CHANNEL, reply_id)
