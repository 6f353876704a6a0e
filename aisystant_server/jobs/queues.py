"""The one way to enqueue a job.

Queues are split by workload: `replies` (long, streaming) and `titles` (short). A reply
job is marked as queued in Redis so the reaper can tell a reply waiting its turn from
one whose job was lost. Views enqueue only after their transaction commits, so a worker
never looks for a message that is not there yet.
"""

import logging
import uuid

import redis as redis_lib
from rq import Queue

from aisystant_server import events

log = logging.getLogger(__name__)

REPLIES = "replies"
TITLES = "titles"
QUEUES = (REPLIES, TITLES)
QUEUED_KEY = "aisystant:reply-queued:{}"
# Longer than a reply normally waits in the queue; if it waits longer, the reaper may
# enqueue it twice, which is harmless (the lease and the claim let one attempt run).
QUEUED_SECONDS = 600
# How long RQ keeps a finished job (its hash and result): for `rq info` and a look by hand;
# the reply's outcome is in the database and the log. Failed jobs are kept for days.
RESULT_SECONDS = 300
_queues = {}


def reply_job_timeout(settings):
    # Every attempt may wait `idle_timeout` for a first token; the stream itself is
    # bounded by max_tokens. RQ must never kill a reply the retries could still save.
    return int(900 + (settings["llm.max_retries"] + 1) * (settings["llm.idle_timeout_seconds"] + 30))


def enqueue_reply(redis, settings, reply_id):
    from aisystant_server.jobs.replies import generate_reply

    with redis.pipeline() as pipe:
        _queue(redis, REPLIES).enqueue(
            generate_reply, reply_id, job_id=f"reply-{reply_id}-{uuid.uuid4().hex[:8]}",
            job_timeout=reply_job_timeout(settings), result_ttl=RESULT_SECONDS, failure_ttl=7 * 86400,
            description=f"assistant reply {reply_id}", pipeline=pipe,
        )
        # In the enqueue's round trip: a failed enqueue leaves no marker, so the reaper retries it.
        pipe.set(QUEUED_KEY.format(reply_id), 1, ex=QUEUED_SECONDS)
        pipe.execute()


def _queue(redis, name):
    """One `Queue` per connection and name: a new one asks Redis for its version (INFO)
    before its first enqueue."""
    key = (id(redis), name)
    if key not in _queues:
        _queues[key] = Queue(name, connection=redis)
    return _queues[key]


def queue_reply(emitter, redis, settings, exchange):
    """Once the transaction that stored `exchange` (`{userMessage, assistantMessage}`) has
    committed: tell the conversation's room, and queue the reply. If Redis is away, the
    reply is stored but not queued: the reaper queues it once Redis is back."""
    question, reply = exchange["userMessage"], exchange["assistantMessage"]
    events.emit(emitter, "message_received", question, question["conversation_id"])
    try:
        enqueue_reply(redis, settings, reply["id"])
    except redis_lib.RedisError as error:
        log.warning("reply %s not queued (%s): the reaper will queue it", reply["id"], error)


def forget_queued(redis, reply_id):
    redis.delete(QUEUED_KEY.format(reply_id))


def enqueue_title(redis, reply_id):
    from aisystant_server.jobs.titles import generate_title

    _queue(redis, TITLES).enqueue(
        generate_title, reply_id, job_timeout=120, result_ttl=RESULT_SECONDS, failure_ttl=86400,
        description=f"title after reply {reply_id}",
    )


def after_commit(request, function, *args):
    """Call `function(*args)` once the request's transaction has committed."""
    request.tm.get().addAfterCommitHook(lambda committed: committed and function(*args))
