"""Fixtures for functional tests: a real database and Redis, fresh for each test.

The suite runs twice: on PostgreSQL with the real Redis (the distributed deployment),
and on SQLite with the in-process Redis (the embedded default). Each test gets its own
database, copied from a template migrated once per run: cheap, and no test can see
another's rows.
"""

import itertools
import os
import shutil
import sys
import uuid

import pytest
import redis
import sqlalchemy as sa
import webtest

from aisystant_server import main
from aisystant_server.migrations import upgrade
from aisystant_server.redis_connection import make_redis
from tests.conftest import POSTGRES_ADMIN_URL
from tests.processes import ROOT, Process, free_port, server_command, wait_for_line

TEST_JWT_SECRET = "functional-tests-secret-" + "x" * 40
MODE_OF_BACKEND = {"postgresql": "distributed", "sqlite": "embedded"}


def pytest_collection_modifyitems(config, items):
    """A test marked `distributed` or `embedded` runs only on that mode's backend."""
    kept, deselected = [], []
    for item in items:
        backend = getattr(item, "callspec", None) and item.callspec.params.get("backend")
        other_mode = {"distributed", "embedded"} - {MODE_OF_BACKEND.get(backend)}
        (deselected if backend and any(item.get_closest_marker(mode) for mode in other_mode) else kept).append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = kept
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
def redis_url(backend, redis_databases):
    """The real Redis (a database of its own, emptied) or "" for the in-process one."""
    if backend == "postgresql":
        connection = redis.Redis.from_url(redis_databases[0])
        connection.flushdb()
        yield redis_databases[0]
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
        app.registry["db.autocommit_engine"].dispose()


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


# Cross-process fixtures: the simulator, and a running server (plus a worker in the
# distributed mode) against it.

FAST_FAILURES = {
    # Small timeouts so that hangs and retries end within seconds in tests.
    "LLM_IDLE_TIMEOUT_SECONDS": "2", "LLM_MAX_RETRIES": "2", "LLM_RETRY_BASE_SECONDS": "0.05",
    "REPLY_LEASE_SECONDS": "3", "REAPER_INTERVAL_SECONDS": "1", "REPLY_WAIT_SECONDS": "30",
    # Every test client connects from 127.0.0.1, some 120 of them at once.
    "MAX_CONNECTIONS_PER_ADDRESS": "1000",
}


@pytest.fixture(scope="session")
def simulator(tmp_path_factory):
    log = tmp_path_factory.mktemp("simulator") / "simulator.log"
    process = Process([sys.executable, "-m", "aisystant_server.simulator", "--port", "0", "--ttft-ms", "30",
                       "--tokens-per-second", "400", "--reply-tokens", "60"], {}, log)
    url = wait_for_line(process, r"listening on (http://\S+)")
    yield url
    process.stop()


class LiveStack:
    """A real server (and worker) on a fresh database, its model being the simulator."""

    def __init__(self, backend, database_url, redis_url, simulator_url, tmp_path):
        self.backend, self.database_url, self.simulator_url = backend, database_url, simulator_url
        self.redis_url = redis_url
        self.tmp_path = tmp_path
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {"DATABASE_URL": database_url, "PORT": str(self.port), "JWT_SECRET": TEST_JWT_SECRET,
                    "ANTHROPIC_BASE_URL": simulator_url, "ANTHROPIC_API_KEY": "test-key",
                    "AISYSTANT_INI": os.path.join(ROOT, "development.ini"), **FAST_FAILURES}
        if backend == "postgresql":
            self.env["REDIS_URL"] = redis_url
        self.workers = []
        self.events_processes = []
        self.server = Process(server_command("serve"), self.env, tmp_path / "server.log")
        try:
            self.server.wait_for_http(self.url + "/api/health")
            if backend == "postgresql":
                self.start_worker()
        except Exception:
            self.stop()
            raise

    def restart_server(self):
        """SIGKILL the server and start a new one on the same port and database."""
        self.server.kill()
        self.server.stop()
        self.server = Process(server_command("serve"), self.env, self.tmp_path / f"server-{next(_counter)}.log")
        self.server.wait_for_http(self.url + "/api/health")

    def start_worker(self):
        worker = Process(server_command("worker"), self.env, self.tmp_path / f"worker-{len(self.workers)}.log")
        wait_for_line(worker, r"Listening on|listening on|started")
        self.workers.append(worker)
        return worker

    def start_events(self, **env):
        """An `aisystant-server events` process of its own (the distributed mode's events role)
        on another port, with the server's environment and `env`: its URL. Stopped with the stack."""
        port = free_port()
        events = Process(server_command("events"), {**self.env, **env, "PORT": str(port)},
                         self.tmp_path / f"events-{next(_counter)}.log")
        self.events_processes.append(events)
        url = f"http://127.0.0.1:{port}"
        events.wait_for_http(url + "/api/health")
        return url

    def stop(self):
        for process in [*self.events_processes, *self.workers, self.server]:
            process.stop()


@pytest.fixture(scope="module")
def live_server(backend, template_database, redis_databases, simulator, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("live")
    if backend == "postgresql":
        name = f"aisystant_live_{os.getpid()}_{next(_counter)}"
        _admin_execute(f"CREATE DATABASE {name} TEMPLATE {template_database}")
        database_url = postgres_url(name)
        connection = redis.Redis.from_url(redis_databases[1])
        connection.flushdb()
    else:
        shutil.copy(template_database, tmp_path / "live.sqlite3")
        database_url = f"sqlite:///{tmp_path / 'live.sqlite3'}"
    stack = LiveStack(backend, database_url, redis_databases[1] if backend == "postgresql" else "", simulator,
                      tmp_path)
    yield stack
    stack.stop()
    if backend == "postgresql":
        _admin_execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        connection.flushdb()
        connection.close()
