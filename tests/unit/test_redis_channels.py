import fakeredis
import redis

from aisystant_server.redis_connection import channel


def test_deployments_on_different_redis_databases_never_share_a_channel():
    assert channel("redis://127.0.0.1:6379/1", "socketio") != channel("redis://127.0.0.1:6379/2", "socketio")
    assert channel("redis://127.0.0.1:6379", "cancel") == channel("redis://127.0.0.1:6379/0", "cancel")
    assert channel(redis.Redis.from_url("redis://127.0.0.1:6379/3"), "cancel") == \
        channel("redis://127.0.0.1:6379/3", "cancel")
    assert channel(fakeredis.FakeRedis(), "cancel") == channel("redis://localhost/0", "cancel")
