"""PostgreSQL connections of a real `aisystant-server serve` under concurrent requests:
at most DATABASE_POOL_SIZE per pool, and kept, never opened and closed request after
request (each opening costs PostgreSQL a new backend process, and the request its wait)."""

import concurrent.futures

import pytest
import requests
import sqlalchemy as sa

from tests.conftest import POSTGRES_ADMIN_URL
from tests.functional.live import Api
from tests.functional.test_http_edge import running_server

pytestmark = pytest.mark.slow

POOL_SIZE = 2
POOLS = 2  # an API process: reads, and the transactions of writes
CLIENTS = 16
REQUESTS_EACH = 30


@pytest.fixture(scope="module")
def server(backend, template_database, redis_databases, tmp_path_factory):
    if backend != "postgresql":
        pytest.skip("DATABASE_POOL_SIZE sizes PostgreSQL's pools")
    with running_server(backend, template_database, redis_databases[1], tmp_path_factory.mktemp("pool"),
                        DATABASE_POOL_SIZE=str(POOL_SIZE)) as server:
        yield server


def sessions_opened(database):
    """How many connections PostgreSQL has accepted to `database` so far."""
    engine = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as admin:
            return admin.execute(sa.text("SELECT sessions FROM pg_stat_database WHERE datname = :name"),
                                 {"name": database}).scalar()
    finally:
        engine.dispose()


def test_concurrent_reads_reuse_the_pools_connections(server):
    api = Api(server.url).register()
    api.conversation()
    database = server.database_url.rsplit("/", 1)[1]
    before = sessions_opened(database)

    def client():
        with requests.Session() as session:
            return [session.get(server.url + "/api/chat/conversations", headers=api.headers, timeout=60).status_code
                    for _ in range(REQUESTS_EACH)]

    with concurrent.futures.ThreadPoolExecutor(CLIENTS) as pool:
        statuses = [status for statuses in pool.map(lambda _: client(), range(CLIENTS)) for status in statuses]
    assert statuses == [200] * CLIENTS * REQUESTS_EACH
    # The pools may still open the connections they keep; with "overflow" connections,
    # closed once given back, 16 clients had the read pool open dozens.
    assert sessions_opened(database) - before <= POOL_SIZE * POOLS
