"""Which database failures are an outage (503 with Retry-After, retried) and which are a
bug (500), on errors raised by real PostgreSQL and SQLite connections."""

import sqlite3
import threading

import pytest
import redis
import sqlalchemy as sa

from aisystant_server.outages import database_unavailable
from tests.conftest import POSTGRES_ADMIN_URL


def raised(engine, statement):
    with pytest.raises(Exception) as caught:
        with engine.connect() as connection:
            connection.execute(sa.text(statement))
    engine.dispose()
    return caught.value


def test_a_refused_connection_is_an_outage():
    engine = sa.create_engine("postgresql+psycopg2://postgres@127.0.0.1:1/none")
    assert database_unavailable(raised(engine, "SELECT 1"))


def test_a_connection_terminated_mid_transaction_is_an_outage():
    engine = sa.create_engine(POSTGRES_ADMIN_URL)
    with pytest.raises(sa.exc.DBAPIError) as caught:
        with engine.connect() as connection:
            pid = connection.execute(sa.text("SELECT pg_backend_pid()")).scalar()
            with engine.connect() as admin:
                admin.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            connection.execute(sa.text("SELECT 1"))
    engine.dispose()
    assert database_unavailable(caught.value)


def test_an_exhausted_pool_is_an_outage():
    engine = sa.create_engine(POSTGRES_ADMIN_URL, pool_size=1, max_overflow=0, pool_timeout=0.1)
    with engine.connect():
        error = raised(engine, "SELECT 1")
    assert isinstance(error, sa.exc.TimeoutError)
    assert database_unavailable(error)


def test_sqlite_locked_by_another_writer_is_an_outage(tmp_path):
    path = tmp_path / "locked.sqlite3"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x INTEGER)")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        error = raised(sa.create_engine(f"sqlite:///{path}", connect_args={"timeout": 0.05}), "SELECT * FROM t")
    finally:
        holder.close()
    assert "locked" in str(error)
    assert database_unavailable(error)


@pytest.mark.parametrize("url, statement", [
    ("sqlite://", "SELECT * FROM no_such_table"),
    (POSTGRES_ADMIN_URL, "SELECT * FROM no_such_table"),
    (POSTGRES_ADMIN_URL, "SELECT 1 / 0"),
    (POSTGRES_ADMIN_URL, "SELEC 1"),
], ids=["sqlite-no-table", "postgresql-no-table", "division-by-zero", "syntax"])
def test_a_bug_is_not_an_outage(url, statement):
    assert not database_unavailable(raised(sa.create_engine(url), statement))


@pytest.mark.parametrize("error", [ValueError("x"), redis.ConnectionError("x"), threading.ThreadError()])
def test_other_failures_are_not_a_database_outage(error):
    assert not database_unavailable(error)
