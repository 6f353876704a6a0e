"""A conversation's cost is its own: opening it and building a reply's prompt read its
newest rows only, however long it is and however many messages everyone else wrote since
it last moved.

Judged by PostgreSQL's own account of the statements the app ran (EXPLAIN ANALYZE): rows
read, not time, so the machine's speed does not matter. (Written as `conversation_id = :c
AND id < :x ORDER BY id DESC`, the page was read by walking the primary key back from the
newest message of all, through every other conversation's newer messages.)
"""

import contextlib

import pytest
import sqlalchemy as sa

from aisystant_server.db import server_side
from aisystant_server.services import messages
from tests.functional.test_conversations import create

QUIET, BUSY = 2_000, 1_000


@pytest.fixture
def quiet_conversation(backend, testapp, account):
    """A long conversation, another one busy since, then a new question in the first:
    (its id, the question's id)."""
    if backend != "postgresql":
        pytest.skip("the plans are PostgreSQL's")
    quiet, busy = create(testapp, account)["id"], create(testapp, account)["id"]
    engine = testapp.app.registry["db.autocommit_engine"]
    with engine.connect() as connection:
        for conversation, count in ((quiet, QUIET), (busy, BUSY), (quiet, 1)):
            connection.execute(sa.text(
                "INSERT INTO messages (conversation_id, user_id, content, role, status, created_at, updated_at,"
                " attempt) SELECT :c, :u, 'message ' || n, CASE WHEN n % 2 = 1 THEN 'user' ELSE 'assistant' END,"
                " 'complete', now(), now(), 0 FROM generate_series(1, :n) AS n"), {"c": conversation, "u": account.id,
                                                                                   "n": count})
        connection.exec_driver_sql("ANALYZE messages")
        last = connection.execute(sa.text("SELECT max(id) FROM messages WHERE conversation_id = :c"),
                                  {"c": quiet}).scalar()
    return quiet, last


def test_opening_a_quiet_conversation_reads_its_page_only(testapp, account, quiet_conversation):
    conversation, _ = quiet_conversation
    with statements_run_by(testapp) as ran:
        page = testapp.get(f"/api/chat/conversations/{conversation}?limit=10", headers=account.headers).json
    assert [message["content"] for message in page["data"]["messages"]][-2:] == [f"message {QUIET}", "message 1"]
    assert rows_read(testapp, ran, "FROM messages") <= 11


def test_a_reply_prompt_in_a_quiet_conversation_reads_its_newest_messages_only(testapp, quiet_conversation):
    conversation, question = quiet_conversation
    with statements_run_by(testapp) as ran, testapp.app.registry["db.autocommit_session_factory"]() as session:
        history, _ = messages.prompt_inputs(session, conversation, question)
    assert len(history) == messages.PROMPT_MESSAGES - 1
    assert rows_read(testapp, ran, "FROM messages") <= messages.PROMPT_MESSAGES


def test_a_late_page_of_conversations_reads_that_page_only(backend, testapp, account):
    # The next page's bound is (updated_at, id) below the cursor's: walked from the user's
    # newest conversation and filtered, a page deep in the list read every newer one.
    if backend != "postgresql":
        pytest.skip("the plans are PostgreSQL's")
    with testapp.app.registry["db.autocommit_engine"].connect() as connection:
        connection.execute(sa.text(
            "INSERT INTO conversations (user_id, title, message_count, created_at, updated_at) SELECT :u, 'c ' || n, 0,"
            " now(), now() - make_interval(mins => n) FROM generate_series(1, 300) AS n"), {"u": account.id})
        connection.exec_driver_sql("ANALYZE conversations")
    cursor = None
    for _ in range(2):
        cursor = testapp.get("/api/chat/conversations", {"limit": 100, **({"cursor": cursor} if cursor else {})},
                             headers=account.headers).json["meta"]["next_cursor"]
    with statements_run_by(testapp) as ran:
        third = testapp.get("/api/chat/conversations", {"limit": 10, "cursor": cursor}, headers=account.headers).json

    assert [each["title"] for each in third["data"]] == [f"c {n}" for n in range(201, 211)]
    assert rows_read(testapp, ran, "FROM conversations", "conversations") <= 11


@contextlib.contextmanager
def statements_run_by(testapp):
    """The (statement, parameters) the app's read engine runs inside the block."""
    engine, ran = testapp.app.registry["db.autocommit_engine"], []

    def record(connection, cursor, statement, parameters, context, executemany):
        ran.append((statement, parameters))

    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        yield ran
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)


def rows_read(testapp, ran, marker, table="messages"):
    """Rows of `table` (under its own name, not an alias) that PostgreSQL read to run the
    recorded statement containing `marker`: returned or filtered out, over every loop; the
    most of its two plans: the one made for these values, and the generic one that a
    prepared statement may run after its fifth run (`db.records`)."""
    [(statement, parameters)] = [(statement, parameters) for statement, parameters in ran if marker in statement]
    prepare, execute = server_side(statement, "judged")
    with testapp.app.registry["db.autocommit_engine"].connect() as connection:
        [[custom]] = connection.exec_driver_sql("EXPLAIN (ANALYZE, FORMAT JSON) " + statement, parameters).all()
        connection.exec_driver_sql("SET plan_cache_mode = force_generic_plan")
        connection.exec_driver_sql(prepare)
        try:
            [[generic]] = connection.exec_driver_sql("EXPLAIN (ANALYZE, FORMAT JSON) " + execute, parameters).all()
        finally:
            connection.exec_driver_sql("DEALLOCATE judged")
            connection.exec_driver_sql("RESET plan_cache_mode")
    return max(_read(custom, table), _read(generic, table))


def _read(plan, table):
    total, nodes = 0, [plan[0]["Plan"]]
    while nodes:
        node = nodes.pop()
        nodes.extend(node.get("Plans", ()))
        if node.get("Relation Name") == table and node.get("Alias") == table:
            total += (node["Actual Rows"] + node.get("Rows Removed by Filter", 0)) * node["Actual Loops"]
    return total
