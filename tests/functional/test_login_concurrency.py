"""The login throttle under real concurrency, against a real `aisystant-server serve`, in
both modes: correct logins in parallel all succeed, parallel wrong guesses stay capped;
and, against the mode's Redis, logins waiting for a slot get it in the order they came.

The server trusts one proxy, so that each test can speak from addresses of its own
(`X-Forwarded-For`) and no test inherits another's failures.
"""

import concurrent.futures
import threading
import time
import uuid

import bcrypt
import pytest
import redis
import requests
import sqlalchemy as sa

from aisystant_server.errors import RateLimited
from aisystant_server.ratelimit import _TAKE_SLOT, LoginThrottle
from aisystant_server.redis_connection import make_redis
from tests.functional.live import Api
from tests.functional.test_http_edge import running_server

pytestmark = pytest.mark.slow

PARALLEL = 16
MAX_FAILURES = 5


@pytest.fixture(scope="module")
def server(backend, template_database, redis_databases, tmp_path_factory):
    with running_server(backend, template_database, redis_databases[1], tmp_path_factory.mktemp("logins"),
                        TRUST_PROXY="true") as server:
        yield server


def address():
    return f"10.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}"


def login(server, email, password, client_address):
    response = requests.post(server.url + "/api/auth/login", json={"email": email, "password": password},
                             headers={"X-Forwarded-For": client_address}, timeout=60)
    return response.status_code


def in_parallel(calls):
    with concurrent.futures.ThreadPoolExecutor(len(calls)) as pool:
        return sorted(pool.map(lambda call: call(), calls))


def account(server):
    api = Api(server.url).register()
    return requests.get(server.url + "/api/auth/me", headers=api.headers, timeout=60).json()["data"]["email"]


def test_parallel_correct_logins_to_one_account_from_one_address_all_succeed(server):
    email, client = account(server), address()
    statuses = in_parallel([lambda: login(server, email, "long enough", client)] * PARALLEL)
    assert statuses == [200] * PARALLEL


def test_parallel_wrong_guesses_on_one_account_are_capped_even_from_many_addresses(server):
    email = account(server)
    statuses = in_parallel([lambda: login(server, email, f"guess {uuid.uuid4()}", address())] * PARALLEL)
    assert statuses == [401] * MAX_FAILURES + [429] * (PARALLEL - MAX_FAILURES)
    assert login(server, email, "long enough", address()) == 429


def test_parallel_wrong_guesses_from_one_address_are_capped_across_accounts(server):
    client = address()
    statuses = in_parallel([lambda: login(server, f"{uuid.uuid4().hex}@example.com", "wrong pass", client)]
                           * PARALLEL)
    assert statuses == [401] * MAX_FAILURES + [429] * (PARALLEL - MAX_FAILURES)


def test_correct_logins_in_parallel_with_guesses_do_not_buy_the_guesser_more_tries(server):
    email, client = account(server), address()
    calls = [lambda: login(server, email, "long enough", client)] * PARALLEL + \
            [lambda: login(server, email, f"guess {uuid.uuid4()}", address())] * PARALLEL
    statuses = in_parallel(calls)
    assert statuses.count(401) == MAX_FAILURES
    assert set(statuses) <= {200, 401, 429}


def test_logins_waiting_for_a_slot_get_it_in_the_order_they_came(redis_url):
    """Five logins from one address hold its five slots and five more wait, arriving one
    after another: as the five end one by one, the waiters get the slots in the order they
    came (asking again at random moments, whoever asked first after a slot was freed took
    it, and a few logins waited seconds while the others got through)."""
    connection = redis.Redis.from_url(redis_url) if redis_url else make_redis({})
    client, granted, releases, threads = address(), [], {}, []

    def attempt(index):
        releases[index] = threading.Event()

        def verify():
            granted.append(index)
            releases[index].wait(30)
            return "the user"
        throttle = LoginThrottle(connection, client, f"{uuid.uuid4().hex}@example.com", MAX_FAILURES, 900)
        thread = threading.Thread(target=throttle.check, args=(verify,))
        thread.start()
        threads.append(thread)
        return throttle.keys[4]  # the address's queue

    def until(condition):
        deadline = time.monotonic() + 10
        while not condition() and time.monotonic() < deadline:
            time.sleep(0.01)
        return condition()

    for index in range(MAX_FAILURES):
        attempt(index)
    assert until(lambda: len(granted) == MAX_FAILURES)
    waiters = [100 + index for index in range(MAX_FAILURES)]
    for position, index in enumerate(waiters):
        queue = attempt(index)
        assert until(lambda: connection.zcard(queue) == position + 1)  # in, before the next comes
    for index in range(MAX_FAILURES):
        releases[index].set()
        assert until(lambda: len(granted) == MAX_FAILURES + index + 1)
    for index in waiters:
        releases[index].set()
    for thread in threads:
        thread.join(30)
    assert granted[MAX_FAILURES:] == waiters


@pytest.mark.parametrize("gone", ["gave up", "was killed"])
def test_a_waiter_that_is_gone_does_not_hold_back_the_next(redis_url, gone):
    """A login that gave up waiting (429) leaves the queue at once; one whose process was
    killed while it waited is dropped from it `STALE_WAITER_MS` after it came."""
    connection = redis.Redis.from_url(redis_url) if redis_url else make_redis({})
    client, releases = address(), [threading.Event() for _ in range(MAX_FAILURES)]

    def throttle(wait_seconds):
        made = LoginThrottle(connection, client, f"{uuid.uuid4().hex}@example.com", MAX_FAILURES, 900)
        made.WAIT_SECONDS, made.STALE_WAITER_MS = wait_seconds, 20_000 if gone == "gave up" else 1_000
        return made

    held = []

    def hold(release):
        held.append(release)
        return release.wait(30) and "the user"
    holders = [threading.Thread(target=throttle(30).check, args=(lambda release=release: hold(release),))
               for release in releases]
    for thread in holders:
        thread.start()
    deadline = time.monotonic() + 10
    while len(held) < MAX_FAILURES and time.monotonic() < deadline:
        time.sleep(0.01)
    if gone == "gave up":
        with pytest.raises(RateLimited):
            throttle(0.3).check(lambda: "the user")
    else:
        ghost = throttle(30)
        assert connection.eval(_TAKE_SLOT, 6, *ghost.keys, MAX_FAILURES, 30_000, ghost.holder,
                               ghost.STALE_WAITER_MS)[0] == 0
    releases[0].set()
    assert throttle(3).check(lambda: "the user") == "the user"
    for release in releases:
        release.set()
    for thread in holders:
        thread.join(30)


def slow_accounts(server, count):
    """Accounts that keep a bcrypt hash of the original product at a cost that takes about
    half a second to check (the first login replaces it)."""
    slow_hash = bcrypt.hashpw(b"long enough", bcrypt.gensalt(rounds=13)).decode()
    emails = [account(server) for _ in range(count)]
    engine = sa.create_engine(server.database_url)
    with engine.begin() as connection:
        connection.execute(sa.text("UPDATE users SET password = :hash WHERE email IN :emails")
                           .bindparams(sa.bindparam("emails", expanding=True)),
                           {"hash": slow_hash, "emails": emails})
    engine.dispose()
    return emails


def answered_before_any_of_these_logins(server, emails, path="/api/health", headers=None):
    # An order, not a duration: the request is sent while the logins hash.
    def log_in(email):
        assert login(server, email, "long enough", address()) == 200
        return time.monotonic()

    with concurrent.futures.ThreadPoolExecutor(len(emails)) as pool:
        logins = [pool.submit(log_in, email) for email in emails]
        time.sleep(0.1)
        requests.get(server.url + path, headers=headers, timeout=60).raise_for_status()
        answered = time.monotonic()
        return answered < min(future.result() for future in logins)


def test_other_requests_are_answered_while_logins_hash(server):
    # On the event loop, the health check would wait for a hash.
    assert answered_before_any_of_these_logins(server, slow_accounts(server, 2))


@pytest.fixture(scope="module")
def one_connection_server(backend, template_database, redis_databases, tmp_path_factory):
    if backend != "postgresql":
        pytest.skip("DATABASE_POOL_SIZE sizes PostgreSQL's pools")
    with running_server(backend, template_database, redis_databases[1], tmp_path_factory.mktemp("pool"),
                        TRUST_PROXY="true", DATABASE_POOL_SIZE="1") as server:
        yield server


def test_logins_hold_no_database_connection_while_they_hash(one_connection_server):
    # One connection per pool: a login holding the one of reads (logins look accounts up
    # there) while it hashes would leave this read waiting for it.
    server = one_connection_server
    reader = Api(server.url).register()
    assert answered_before_any_of_these_logins(server, slow_accounts(server, 2), "/api/chat/conversations",
                                               reader.headers)
