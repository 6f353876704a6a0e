"""Fixtures for functional tests: a real database and Redis, fresh for each test.

The suite runs twice: on PostgreSQL with the real Redis (the distributed deployment),
and on SQLite with the in-process Redis (the embedded default). Each test gets its own
database, copied from a template migrated once per run: cheap, and no test can see
another's rows.
"""

import itertools
import os
import shutil
import uuid

import pytest
import redis
import sqlalchemy as sa
import webtest

from aisystant_server import main
from aisystant_server.migrations import upgrade
from aisystant_server.redis_connection import make_redis
from tests.conftest import POSTGRES_ADMIN_URL, REDIS_TEST_URL

TEST_JWT_SECRET = "functional-tests-secret-" + "x" * 40
_counter = itertools.count()


def _admin_execute(*statements):
    engine = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        for statement in statements:
            connection.exec_driver_sql(statement)
    engine.dispose()


def postgres_url(name):
    return sa.engine.make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)


@pytest.fixture(scope="session", params=["postgresql", "sqlite"])
def backend(request):
    return request.param


@pytest.fixture(scope="session")
def template_database(backend, tmp_path_factory):
    """A migrated database that each test's database is copied from."""
    if backend == "postgresql":
        name = f"aisystant_template_{os.getpid()}"
        _admin_execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", f"CREATE DATABASE {name}")
        upgrade(postgres_url(name))
        yield name
        _admin_execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    else:
        path = tmp_path_factory.mktemp("sqlite") / "template.sqlite3"
        upgrade(f"sqlite:///{path}")
        yield path


@pytest.fixture
def database_url(backend, template_database, tmp_path):
    if backend == "postgresql":
        name = f"aisystant_test_{os.getpid()}_{next(_counter)}"
        _admin_execute(f"CREATE DATABASE {name} TEMPLATE {template_database}")
        yield postgres_url(name)
        _admin_execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    else:
        path = tmp_path / "aisystant.sqlite3"
        shutil.copy(template_database, path)
        yield f"sqlite:///{path}"


@pytest.fixture
def redis_url(backend):
    """The real Redis (a database of its own, emptied) or "" for the in-process one."""
    if backend == "postgresql":
        connection = redis.Redis.from_url(REDIS_TEST_URL)
        connection.flushdb()
        yield REDIS_TEST_URL
        connection.flushdb()
        connection.close()
    else:
        make_redis({}).flushall()
        yield ""


@pytest.fixture
def settings(database_url, redis_url):
    return {
        "sqlalchemy.url": database_url,
        "redis.url": redis_url,
        "jwt.secret": TEST_JWT_SECRET,
        "cors.origins": "http://localhost:3000, https://ops.example.com",
    }


@pytest.fixture
def make_app(settings):
    """Build the WSGI app with settings overrides, wrapped in WebTest."""
    apps = []

    def factory(**overrides):
        app = main({}, **{**settings, **overrides})
        apps.append(app)
        return webtest.TestApp(app, extra_environ={"REMOTE_ADDR": "203.0.113.7"})

    yield factory
    for app in apps:
        app.registry["db.engine"].dispose()


@pytest.fixture
def testapp(make_app):
    return make_app()


class Account:
    """A registered user, as a client holds it: its profile, password and token."""

    def __init__(self, user, password, token):
        self.user, self.password, self.token = user, password, token
        self.id, self.email = user["id"], user["email"]

    @property
    def headers(self):
        return {"Authorization": f"Bearer {self.token}"}


def register(testapp, **fields):
    suffix = uuid.uuid4().hex[:10]
    body = {"username": f"user_{suffix}", "email": f"user_{suffix}@example.com", "password": "correct horse 42"}
    body.update(fields)
    data = testapp.post_json("/api/auth/register", body, status=201).json["data"]
    return Account(data["user"], body["password"], data["token"])


@pytest.fixture
def account(testapp):
    return register(testapp)


@pytest.fixture
def other_account(testapp):
    return register(testapp)
