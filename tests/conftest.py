import os

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


@pytest.fixture(scope="session")
def redis_databases():
    """Two Redis databases of this test session's own (claimed in database 0), so that
    test sessions running at the same time never flush or serve each other's queues."""
    registry = redis.Redis.from_url(f"{REDIS_SERVER_URL}/0")
    claimed = []
    for number in REDIS_CANDIDATES:
        if registry.set(CLAIM_KEY.format(number), os.getpid(), nx=True, ex=3 * 3600):
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
