"""`db.records` runs the request and reply paths' statements on the driver's cursor: what
it hands back and what it raises must be what SQLAlchemy's execution would give, on
PostgreSQL and on SQLite, so that the rest of the app (presenting rows, telling an outage
from a bug) cannot tell the difference. On PostgreSQL it prepares them on each connection
and runs them by name (`DATABASE_PREPARED_STATEMENTS`)."""

from datetime import datetime, timezone

import gevent
import pytest
import sqlalchemy as sa

from aisystant_server.db import make_engine, make_session_factory, record, records, server_side
from aisystant_server.outages import database_unavailable
from aisystant_server.services import messages
from tests.functional.conftest import _admin_execute, register
from tests.functional.test_conversations import add_messages, create


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


def prepared_on(engine):
    """{statement: runs} of the statements prepared on the pool's connection. The tests'
    requests run one at a time: a pool holds the one connection they all used."""
    with engine.connect() as connection:
        return dict(connection.exec_driver_sql(
            "SELECT statement, generic_plans + custom_plans FROM pg_prepared_statements").all())


def read_conversation(testapp, account, conversation_id):
    return testapp.get(f"/api/chat/conversations/{conversation_id}", headers=account.headers, status=200).json


@pytest.fixture
def filled_conversation(backend, testapp, account):
    if backend != "postgresql":
        pytest.skip("PostgreSQL's prepared statements")
    conversation = create(testapp, account)["id"]
    add_messages(testapp, conversation, account.id, 4)
    return conversation


def test_a_reads_statements_are_prepared_once_on_its_connection_then_run_by_name(testapp, account, filled_conversation):
    first = read_conversation(testapp, account, filled_conversation)
    engine = testapp.app.registry["db.autocommit_engine"]
    prepared = prepared_on(engine)
    [page] = [statement for statement in prepared if "FROM messages" in statement]

    for _ in range(6):
        assert read_conversation(testapp, account, filled_conversation) == first
    again = prepared_on(engine)

    assert page.startswith("PREPARE aisystant_") and "$1" in page
    assert again.keys() == prepared.keys() and again[page] == prepared[page] + 6
    assert len(first["data"]["messages"]) == 4


def test_a_read_after_its_connection_was_lost_prepares_its_statements_again(testapp, account, filled_conversation,
                                                                               database_url):
    first = read_conversation(testapp, account, filled_conversation)
    name = sa.engine.make_url(database_url).database
    _admin_execute(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")

    assert read_conversation(testapp, account, filled_conversation) == first
    assert any("FROM messages" in statement for statement in prepared_on(testapp.app.registry["db.autocommit_engine"]))


def test_without_prepared_statements_a_read_prepares_nothing(make_app, backend):
    # For a pooler that keeps no session's state between transactions (PgBouncer's
    # transaction mode).
    if backend != "postgresql":
        pytest.skip("PostgreSQL's prepared statements")
    testapp = make_app(**{"sqlalchemy.prepared_statements": False})
    account = register(testapp)
    conversation = create(testapp, account)["id"]
    add_messages(testapp, conversation, account.id, 2)

    assert len(read_conversation(testapp, account, conversation)["data"]["messages"]) == 2
    assert prepared_on(testapp.app.registry["db.autocommit_engine"]) == {}
    assert prepared_on(testapp.app.registry["db.engine"]) == {}


def test_a_statement_is_prepared_with_numbered_parameters_and_run_with_named_ones():
    prepare, execute = server_side("SELECT %(a)s, %(b)s WHERE x = %(a)s AND y LIKE 'z%%'", "s1")

    assert prepare == "PREPARE s1 AS SELECT $1, $2 WHERE x = $1 AND y LIKE 'z%'"
    assert execute == "EXECUTE s1 (%(a)s, %(b)s)"
    assert server_side("SELECT 1", "s2") == ("PREPARE s2 AS SELECT 1", "EXECUTE s2")
