import os

import bcrypt
import pytest
import sqlalchemy as sa
import webtest

from aisystant_server import main
from aisystant_server.db import Base
from aisystant_server.migrations import downgrade, upgrade
from tests.functional.conftest import TEST_JWT_SECRET, _admin_execute, postgres_url

ORIGINAL_DDL = """
CREATE TABLE users (id SERIAL PRIMARY KEY, username VARCHAR(50) UNIQUE NOT NULL, email VARCHAR(100) UNIQUE NOT NULL,
  password VARCHAR(255) NOT NULL, avatar_url VARCHAR(255), role VARCHAR(20) DEFAULT 'user',
  created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP, updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP);
CREATE TABLE conversations (id SERIAL PRIMARY KEY, user_id INTEGER REFERENCES users(id) ON DELETE CASCADE,
  title VARCHAR(255), created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP, updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP);
CREATE TABLE messages (id SERIAL PRIMARY KEY, conversation_id INTEGER REFERENCES conversations(id) ON DELETE CASCADE,
  user_id INTEGER REFERENCES users(id) ON DELETE SET NULL, content TEXT NOT NULL,
  role VARCHAR(20) NOT NULL CHECK (role IN ('user','assistant','system')), metadata JSONB,
  created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP);
CREATE INDEX idx_messages_conversation ON messages(conversation_id);
CREATE INDEX idx_conversations_user ON conversations(user_id);
CREATE TABLE ssh_servers (id SERIAL PRIMARY KEY, user_id INTEGER REFERENCES users(id) ON DELETE CASCADE,
  name VARCHAR(100) NOT NULL, host VARCHAR(255) NOT NULL, port INTEGER DEFAULT 22,
  created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP);
CREATE TABLE command_history (id SERIAL PRIMARY KEY, server_id INTEGER REFERENCES ssh_servers(id) ON DELETE CASCADE,
  command TEXT NOT NULL, output TEXT, exit_code INTEGER, executed_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP);
"""
PASSWORD = "original-product-password"


@pytest.fixture
def original_database():
    name = f"aisystant_original_{os.getpid()}"
    _admin_execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", f"CREATE DATABASE {name}")
    url = postgres_url(name)
    engine = sa.create_engine(url)
    legacy_hash = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=10)).decode()
    assert legacy_hash.startswith("$2b$10$")
    with engine.begin() as connection:
        connection.exec_driver_sql(ORIGINAL_DDL)
        connection.execute(sa.text(
            "INSERT INTO users (username, email, password, role) VALUES ('legacy', 'legacy@example.com', :h, 'admin')"
        ), {"h": legacy_hash})
        connection.exec_driver_sql("INSERT INTO conversations (user_id, title) VALUES (1, 'Old incident')")
        connection.exec_driver_sql(
            "INSERT INTO messages (conversation_id, user_id, content, role) VALUES (1, 1, 'Pod crashloop?', 'user')")
        connection.exec_driver_sql(
            "INSERT INTO messages (conversation_id, content, role, metadata) VALUES "
            "(1, 'Check the logs.', 'assistant', '{\"model\": \"claude-3\"}')")
        connection.exec_driver_sql("INSERT INTO ssh_servers (user_id, name, host) VALUES (1, 'bastion', '10.0.0.1')")
        connection.exec_driver_sql("INSERT INTO command_history (server_id, command, exit_code) VALUES (1, 'uptime', 0)")
    engine.dispose()
    yield url, legacy_hash
    _admin_execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_original_database_is_upgraded_in_place_keeping_its_rows(original_database, redis_url):
    url, legacy_hash = original_database
    upgrade(url)
    engine = sa.create_engine(url)
    with engine.connect() as connection:
        assert connection.execute(sa.text("SELECT count(*) FROM users")).scalar() == 1
        assert connection.execute(sa.text(
            "SELECT content, role, status, metadata FROM messages ORDER BY id")).all() == [
            ("Pod crashloop?", "user", "complete", None),
            ("Check the logs.", "assistant", "complete", {"model": "claude-3"})]
        assert connection.execute(sa.text("SELECT name, host FROM ssh_servers")).all() == [("bastion", "10.0.0.1")]
        assert connection.execute(sa.text("SELECT command FROM command_history")).scalar() == "uptime"
        column_type = connection.execute(sa.text(
            "SELECT data_type FROM information_schema.columns WHERE table_name='messages' AND column_name='created_at'"
        )).scalar()
        assert column_type == "timestamp with time zone"

    testapp = webtest.TestApp(main({}, **{"sqlalchemy.url": url, "redis.url": redis_url, "jwt.secret": TEST_JWT_SECRET}))
    login = testapp.post_json("/api/auth/login", {"email": "legacy@example.com", "password": PASSWORD}).json["data"]
    assert login["user"]["role"] == "admin"
    headers = {"Authorization": f"Bearer {login['token']}"}
    conversation = testapp.get("/api/chat/conversations/1", headers=headers).json["data"]
    assert [message["content"] for message in conversation["messages"]] == ["Pod crashloop?", "Check the logs."]
    listed = testapp.get("/api/chat/conversations", headers=headers).json["data"]
    assert listed[0]["message_count"] == 2
    testapp.app.registry["db.engine"].dispose()
    testapp.app.registry["db.autocommit_engine"].dispose()

    with engine.connect() as connection:
        new_hash = connection.execute(sa.text("SELECT password FROM users")).scalar()
    engine.dispose()
    assert new_hash != legacy_hash
    assert new_hash.startswith("$argon2id$")


def test_the_original_products_times_keep_their_instant_when_its_server_is_not_in_utc(redis_url):
    # The original stored CURRENT_TIMESTAMP in columns without a time zone: the server's
    # local time. The upgrade reads them in that time zone; the API then says them in UTC.
    name = f"aisystant_original_tz_{os.getpid()}"
    _admin_execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", f"CREATE DATABASE {name}",
                   f"ALTER DATABASE {name} SET timezone TO 'America/New_York'")
    url = postgres_url(name)
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        connection.exec_driver_sql(ORIGINAL_DDL)
        connection.execute(sa.text("INSERT INTO users (username, email, password, created_at) VALUES "
                                   "('legacy', 'legacy@example.com', :h, '2025-10-01 12:00:00')"),
                           {"h": bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()})
    engine.dispose()
    try:
        upgrade(url)
        testapp = webtest.TestApp(main({}, **{"sqlalchemy.url": url, "redis.url": redis_url,
                                              "jwt.secret": TEST_JWT_SECRET}))
        token = testapp.post_json("/api/auth/login", {"email": "legacy@example.com",
                                                      "password": PASSWORD}).json["data"]["token"]
        me = testapp.get("/api/auth/me", headers={"Authorization": f"Bearer {token}"}).json["data"]
        assert me["created_at"] == "2025-10-01T16:00:00.000Z"  # noon in New York (EDT)
        testapp.app.registry["db.engine"].dispose()
        testapp.app.registry["db.autocommit_engine"].dispose()
    finally:
        _admin_execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_upgraded_schema_matches_the_models(original_database):
    url, _ = original_database
    upgrade(url)
    engine = sa.create_engine(url)
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    engine.dispose()
    assert [diff for diff in differences if "ssh_servers" not in str(diff) and "command_history" not in str(diff)] == []


def test_fresh_database_matches_the_models_and_downgrades(database_url):
    engine = sa.create_engine(database_url)
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    with engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    engine.dispose()
    downgrade(database_url, "base")
    upgrade(database_url)


def test_an_embedded_database_made_before_autoincrement_never_reuses_ids_once_upgraded(tmp_path):
    url = f"sqlite:///{tmp_path / 'older.sqlite3'}"
    upgrade(url, "0002")
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        connection.exec_driver_sql(
            "INSERT INTO users (username, email, password) VALUES ('kept', 'kept@example.com', 'x')")
        for title in ("first", "second", "newest"):
            connection.execute(sa.text("INSERT INTO conversations (user_id, title) VALUES (1, :t)"), {"t": title})
    upgrade(url)
    with engine.begin() as connection:
        connection.exec_driver_sql("DELETE FROM conversations WHERE title = 'newest'")
        connection.exec_driver_sql("INSERT INTO conversations (user_id, title) VALUES (1, 'after')")
        rows = connection.execute(sa.text("SELECT id, title FROM conversations ORDER BY id")).all()
    engine.dispose()
    assert rows == [(1, "first"), (2, "second"), (4, "after")]
