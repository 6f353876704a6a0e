import os

from aisystant_server.settings import ENVIRONMENT

# The suite builds its own settings: a developer's DATABASE_URL or REDIS_URL must never
# reach a test (it would run against their data).
for _variable in [*ENVIRONMENT, "AISYSTANT_INI", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "CLAUDE_MODEL"]:
    os.environ.pop(_variable, None)

POSTGRES_ADMIN_URL = os.environ.get("AISYSTANT_TEST_POSTGRES", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
REDIS_TEST_URL = os.environ.get("AISYSTANT_TEST_REDIS", "redis://127.0.0.1:6379/12")
