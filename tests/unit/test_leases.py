import fakeredis
import gevent
import pytest

from aisystant_server.jobs.queues import QUEUED_KEY
from aisystant_server.jobs.runtime import LEASE_KEY, LeaseLost, Runtime


class Context:
    """What the runtime reads of a job context; the database is not needed here."""

    def __init__(self):
        self.redis = fakeredis.FakeRedis(server=fakeredis.FakeServer())
        self.settings = {"worker.lease_seconds": 3, "worker.reaper_interval": 60}
        self.session_factory = None


@pytest.fixture
def runtime():
    return Runtime(Context())


@pytest.fixture
def keeping(runtime):
    # Only the lease loop: the cancel listener blocks in a process gevent has not patched.
    greenlet = gevent.spawn(runtime.keep_leases)
    yield
    greenlet.kill()


def test_a_lease_is_held_by_one_attempt_at_a_time(runtime):
    token = runtime.acquire(7)
    assert token and runtime.redis.get(LEASE_KEY.format(7)).decode() == token
    assert runtime.acquire(7) is None


def test_a_dequeued_job_clears_the_queued_marker_with_or_without_the_lease(runtime):
    # The marker tells the reaper a job waits in a queue; a job that left the queue and
    # kept it would hide a lost reply from the reaper until the marker expired.
    runtime.redis.set(QUEUED_KEY.format(7), 1)
    assert runtime.acquire(7)
    assert runtime.redis.get(QUEUED_KEY.format(7)) is None
    runtime.redis.set(QUEUED_KEY.format(7), 1)
    assert runtime.acquire(7) is None
    assert runtime.redis.get(QUEUED_KEY.format(7)) is None


def test_an_attempt_never_releases_its_successors_lease(runtime):
    old = runtime.acquire(7)
    runtime.redis.delete(LEASE_KEY.format(7))
    new = runtime.acquire(7)
    runtime.release(7, old)
    assert runtime.redis.get(LEASE_KEY.format(7)).decode() == new
    runtime.release(7, new)
    assert runtime.redis.get(LEASE_KEY.format(7)) is None


def test_an_attempt_whose_lease_was_taken_over_is_stopped(runtime, keeping):
    outcome = {}

    def attempt():
        runtime.acquire(7)
        try:
            gevent.sleep(30)
        except LeaseLost:
            outcome["stopped"] = True

    greenlet = gevent.spawn(attempt)
    gevent.sleep(0.1)
    runtime.redis.set(LEASE_KEY.format(7), "another attempt")
    greenlet.join(timeout=5)
    assert outcome == {"stopped": True}
    assert runtime.redis.get(LEASE_KEY.format(7)) == b"another attempt"


def test_leases_of_live_attempts_are_kept_alive(runtime, keeping):
    token = runtime.acquire(7)
    gevent.sleep(4)
    assert runtime.redis.get(LEASE_KEY.format(7)).decode() == token


def test_a_lease_lost_with_redis_data_is_taken_back_and_the_attempt_goes_on(runtime, keeping):
    outcome = {}

    def attempt():
        token = runtime.acquire(7)
        try:
            gevent.sleep(2)
            outcome["finished"] = token
        except LeaseLost:
            outcome["stopped"] = True

    greenlet = gevent.spawn(attempt)
    gevent.sleep(0.1)
    runtime.redis.flushall()
    greenlet.join(timeout=5)
    assert "stopped" not in outcome
    assert runtime.redis.get(LEASE_KEY.format(7)).decode() == outcome["finished"]
