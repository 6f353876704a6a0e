"""The one way to emit a real-time event: publish it on Redis for the events process.

Producers (API processes, reply workers) publish `{"event", "room", "data"}` on one
channel; whatever serves clients (the Socket.IO endpoint) subscribes and forwards each
event to the conversation's room. Redis carries events between processes and, in the
embedded mode, inside the one process.
"""

import json
import logging

import redis as redis_lib

log = logging.getLogger(__name__)
CHANNEL = "aisystant:events"


def conversation_room(conversation_id):
    return f"conversation:{conversation_id}"


def encode(event, data, conversation_id):
    return json.dumps({"event": event, "room": conversation_room(conversation_id), "data": data})


def emit(redis, event, data, conversation_id):
    try:
        redis.publish(CHANNEL, encode(event, data, conversation_id))
    except redis_lib.RedisError:
        # Clients catch up from the stream or the REST API; a lost event is not lost data.
        log.exception("could not publish %s", event)
