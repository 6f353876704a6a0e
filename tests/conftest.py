import os
import socket

import pytest
import redis

from aisystant_server.settings import ENVIRONMENT

# The suite builds its own settings: a developer's DATABASE_URL or REDIS_URL must never
# reach a test (it would run against their data).
for _variable in [*ENVIRONMENT, "AISYSTANT_INI", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "CLAUDE_MODEL"]:
    os.environ.pop(_variable, None)

POSTGRES_ADMIN_URL = os.environ.get("AISYSTANT_TEST_POSTGRES", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
REDIS_SERVER_URL = os.environ.get("AISYSTANT_TEST_REDIS", "redis://127.0.0.1:6379").rstrip("/")
REDIS_CANDIDATES = range(1, 13)
CLAIM_KEY = "aisystant-tests:claimed-db:{}"
CLAIM_SECONDS = 3 * 3600
# Who holds a claim: this machine and process.
OWNER = f"{socket.gethostname()}:{os.getpid()}"
# Delete a claim only if it still names the holder we found gone.
_RELEASE_IF_HELD_BY = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"


def _claim(registry, number):
    """Claim Redis database `number`, or take over the claim of a session of this machine
    that is gone (killed outright, it could not release its claims, which would otherwise
    block later sessions for hours)."""
    key = CLAIM_KEY.format(number)
    if registry.set(key, OWNER, nx=True, ex=CLAIM_SECONDS):
        return True
    holder = registry.get(key)
    if holder is None or not _gone(holder.decode()):
        return False
    registry.eval(_RELEASE_IF_HELD_BY, 1, key, holder)
    return bool(registry.set(key, OWNER, nx=True, ex=CLAIM_SECONDS))


def _gone(holder):
    """True if `holder` ("host:pid", or a bare pid from older sessions) is a process of this
    machine that no longer runs."""
    host, _, pid = holder.rpartition(":")
    if host not in ("", socket.gethostname()) or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


@pytest.fixture(scope="session")
def redis_databases():
    """Two Redis databases of this test session's own (claimed in database 0), so that
    test sessions running at the same time never flush or serve each other's queues."""
    registry = redis.Redis.from_url(f"{REDIS_SERVER_URL}/0")
    claimed = []
    for number in REDIS_CANDIDATES:
        if _claim(registry, number):
            claimed.append(number)
            if len(claimed) == 2:
                break
    if len(claimed) < 2:
        raise RuntimeError(f"no free Redis database among {list(REDIS_CANDIDATES)} on {REDIS_SERVER_URL}")
    yield [f"{REDIS_SERVER_URL}/{number}" for number in claimed]
    for number in claimed:
        redis.Redis.from_url(f"{REDIS_SERVER_URL}/{number}").flushdb()
        registry.delete(CLAIM_KEY.format(number))
    registry.close()
