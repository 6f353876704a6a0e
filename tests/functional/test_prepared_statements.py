"""`db.records` runs the request and reply paths' statements on the driver's cursor: what
it hands back and what it raises must be what SQLAlchemy's execution would give, on
PostgreSQL and on SQLite, so that the rest of the app (presenting rows, telling an outage
from a bug) cannot tell the difference."""

from datetime import datetime, timezone

import gevent
import pytest
import sqlalchemy as sa

from aisystant_server.db import make_engine, make_session_factory, record, records
from aisystant_server.outages import database_unavailable
from aisystant_server.services import messages


@pytest.fixture
def engine(database_url):
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def conversation_id(engine):
    with engine.begin() as connection:
        user = connection.execute(sa.text(
            "INSERT INTO users (username, email, password, role, created_at, updated_at) "
            "VALUES ('ann', 'ann@example.com', 'x', 'user', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP) RETURNING id")).scalar()
        return connection.execute(sa.text(
            "INSERT INTO conversations (user_id, title, message_count, created_at, updated_at) "
            "VALUES (:u, 't', 0, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP) RETURNING id"), {"u": user}).scalar()


def insert_message(session, conversation_id, meta, now):
    return record(session, messages._INSERT, {
        "conversation_id": conversation_id, "user_id": None, "role": "assistant", "content": "hello",
        "status": "pending", "metadata": meta, "reply_to_id": None, "attempt": 0, "created_at": now,
        "updated_at": now})


def test_values_go_in_and_come_back_as_their_types_make_them(engine, conversation_id):
    # SQLite keeps neither time zones nor JSON: the types' converters do, both ways.
    now = datetime(2026, 12, 3, 17, 4, 5, 123456, tzinfo=timezone.utc)
    meta = {"language": "fr", "usage": {"input_tokens": 3}}
    with make_session_factory(engine)() as session:
        inserted = insert_message(session, conversation_id, meta, now)
        session.commit()
        claimed = record(session, messages._CLAIM, {"p_id": inserted.id, "p_now": now})
        session.commit()
        gone = record(session, messages._CLAIM, {"p_id": 2**31 - 1, "p_now": now})

    assert inserted.meta == meta and inserted.created_at == now and inserted.created_at.utcoffset() is not None
    assert (claimed.attempt, claimed.meta, claimed.created_at) == (1, meta, now)
    assert gone is None


def test_a_constraint_broken_is_sqlalchemys_error_and_not_an_outage(engine):
    with make_session_factory(engine)() as session:
        with pytest.raises(sa.exc.IntegrityError) as caught:
            insert_message(session, 2**31 - 1, None, datetime.now(timezone.utc))
        session.rollback()
        assert records(session, sa.select(sa.literal(1).label("one")), {})[0].one == 1

    assert not database_unavailable(caught.value)


def test_a_connection_lost_under_a_statement_is_an_outage_and_is_not_used_again(engine, backend):
    if backend != "postgresql":
        pytest.skip("a server to lose the connection to")
    factory, own = make_session_factory(engine), sa.select(sa.func.pg_backend_pid().label("pid"))
    with factory() as session:
        pid = record(session, own, {}).pid
        with engine.connect() as admin:
            admin.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        with pytest.raises(sa.exc.DBAPIError) as caught:
            record(session, own, {})

    assert database_unavailable(caught.value)
    with factory() as session:
        assert record(session, own, {}).pid != pid


def interrupt_statements(engine, error):
    """Raise `error` where the next statement runs, as gevent raises a timeout or a kill
    inside the driver's wait."""
    def interrupt(*_):
        sa.event.remove(engine, "before_cursor_execute", interrupt)
        raise error
    sa.event.listen(engine, "before_cursor_execute", interrupt)


def test_a_statement_cut_by_its_greenlets_timeout_raises_the_timeout_and_drops_its_connection(engine):
    factory, one = make_session_factory(engine), sa.select(sa.literal(1).label("one"))
    timeout = gevent.Timeout(5)
    with factory() as session:
        connection = session.connection()
        interrupt_statements(engine, timeout)
        with pytest.raises(gevent.Timeout) as caught:
            record(session, one, {})
        assert caught.value is timeout
        assert connection.invalidated  # in an unknown state: never handed out again
    with factory() as session:
        assert record(session, one, {}).one == 1


def test_an_exception_thrown_into_a_statement_is_raised_as_it_is(engine):
    class LeaseLost(Exception):
        pass

    with make_session_factory(engine)() as session:
        interrupt_statements(engine, LeaseLost("another attempt took the reply"))
        with pytest.raises(LeaseLost):
            record(session, sa.select(sa.literal(1).label("one")), {})
