"""What counts as an outage (Redis or the database unreachable), as opposed to a bug.

An outage is waited out or reported as 503 with `Retry-After`; a bug is a 500, and a
reply that hits one ends in `error` instead of being tried again.
"""

import sqlite3

import psycopg2
import redis
import sqlalchemy as sa

# SQLSTATEs of a PostgreSQL that cannot serve us now: shutting down (admin or crash),
# starting up, too many connections; class 08 (connection exceptions) as a whole.
UNAVAILABLE_SQLSTATES = {"57P01", "57P02", "57P03", "53300"}
SQLITE_BUSY, SQLITE_LOCKED = 5, 6


def database_unavailable(error):
    """True when the database cannot be reached right now (connection refused or lost,
    the pool exhausted, SQLite busy or locked by another writer), as opposed to a bug or
    a conflict (a missing table, bad SQL, a constraint, a statement timeout)."""
    if isinstance(error, sa.exc.TimeoutError):  # no connection free in the pool in time
        return True
    if not isinstance(error, sa.exc.DBAPIError):
        return False
    if error.connection_invalidated:  # SQLAlchemy's dialect recognised a disconnect
        return True
    original = error.orig
    if isinstance(original, sqlite3.OperationalError):
        return getattr(original, "sqlite_errorcode", 0) & 0xFF in (SQLITE_BUSY, SQLITE_LOCKED)
    sqlstate = getattr(original, "pgcode", None)
    if sqlstate is None:
        # libpq's own failures carry no SQLSTATE: refused, unreachable, connection lost.
        return isinstance(original, psycopg2.OperationalError)
    return sqlstate.startswith("08") or sqlstate in UNAVAILABLE_SQLSTATES


def is_outage(error):
    return isinstance(error, redis.RedisError) or database_unavailable(error)


def log_failure(log, error, message, *args):
    """Log a caught failure as an operator needs it. An outage is one line naming what could
    not be reached: its traceback says nothing more, and under load one for each request
    and each background tick buries that line (about 430 in a 10-second outage of Redis).
    Anything else is a bug: its traceback is kept."""
    if is_outage(error):
        log.error(f"{message}: %s", *args, error)
    else:
        log.error(message, *args, exc_info=error)
