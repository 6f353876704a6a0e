"""What counts as an outage (Redis or the database unreachable), as opposed to a bug.

An outage is waited out or reported as 503 with `Retry-After`; a bug is a 500, and a
reply that hits one ends in `error` instead of being tried again.
"""

import redis
import sqlalchemy as sa


def database_unavailable(error):
    """True when the database cannot be reached right now (connection refused or lost,
    pool exhausted, SQLite locked), as opposed to a bug in a query."""
    if isinstance(error, sa.exc.TimeoutError):
        return True
    if not isinstance(error, (sa.exc.OperationalError, sa.exc.InterfaceError)):
        return False
    if error.connection_invalidated or type(error.orig).__module__.startswith("psycopg2"):
        return True
    return "locked" in str(error.orig)


def is_outage(error):
    return isinstance(error, redis.RedisError) or database_unavailable(error)
