import time
import uuid

import fakeredis
import redis

from aisystant_server.redis_connection import EXPIRED_KEYS_SWEEP_SECONDS, channel, make_redis


def test_deployments_on_different_redis_databases_never_share_a_channel():
    assert channel("redis://127.0.0.1:6379/1", "socketio") != channel("redis://127.0.0.1:6379/2", "socketio")
    assert channel("redis://127.0.0.1:6379", "cancel") == channel("redis://127.0.0.1:6379/0", "cancel")
    assert channel(redis.Redis.from_url("redis://127.0.0.1:6379/3"), "cancel") == \
        channel("redis://127.0.0.1:6379/3", "cancel")
    assert channel(fakeredis.FakeRedis(), "cancel") == channel("redis://localhost/0", "cancel")


def test_the_embedded_redis_lets_go_of_expired_keys():
    # Real Redis deletes expired keys by itself. fakeredis deletes them only when a command
    # reads them, lists or counts the keys: the embedded mode's every reply stream and job
    # would stay in the process for good. What the process holds is read from the fake
    # server's own dict (a command would sweep by itself).
    client = make_redis({})
    held = client.connection_pool.connection_kwargs["server"].dbs[0]._dict
    names = [f"expiring-test:{uuid.uuid4().hex}:{n}" for n in range(200)]
    for name in names:
        client.set(name, "x" * 100, px=1000)
    assert all(name.encode() in held for name in names)
    deadline = time.monotonic() + 1 + 2 * EXPIRED_KEYS_SWEEP_SECONDS + 3
    while any(name.encode() in held for name in names):
        assert time.monotonic() < deadline, "expired keys are still held"
        time.sleep(0.1)
