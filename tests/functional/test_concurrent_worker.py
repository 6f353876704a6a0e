"""ConcurrentWorker run as a real, gevent-patched process against Redis database 13.

Every worker here is a subprocess started like the product's entry point starts
it (`monkey.patch_all()`, then `run_worker`), so signals, exit codes and the
worker's registration behave as in production. Timing assertions are generous:
the machine is shared.
"""

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import redis
from rq import Queue, Retry, Worker
from rq.job import JobStatus
from rq.registry import FailedJobRegistry, FinishedJobRegistry, StartedJobRegistry
from rq.suspension import resume, suspend

from aisystant_server.jobs.worker import SAME_STOP_SECONDS, SUSPENSION_CHECK_SECONDS
from tests import worker_jobs

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]

# The entry point as the product's `aisystant-server worker` command runs it.
LAUNCHER = """
from gevent import monkey
monkey.patch_all()

import json
import sys

import redis

from aisystant_server.jobs.worker import run_worker

options = json.loads(sys.argv[1])
connection = redis.Redis.from_url(options.pop("url"))
run_worker(connection, options.pop("queues"), **options)
# VmHWM, not getrusage()'s ru_maxrss, which keeps the peak of the forking parent (pytest) across exec.
with open("/proc/self/status") as status:
    peak_rss_kb = next(line.split()[1] for line in status if line.startswith("VmHWM:"))
print("peak_rss_kb", peak_rss_kb, flush=True)
"""

# The embedded mode: one gevent process, an in-process fakeredis server, the worker in a greenlet.
EMBEDDED = """
from gevent import monkey
monkey.patch_all()

import json
import os
import signal
import time

import fakeredis
import gevent
from rq import Queue, Worker

from aisystant_server.jobs.worker import create_worker
from tests import worker_jobs

server = fakeredis.FakeServer()
host_signals = []
signal.signal(signal.SIGTERM, lambda signum, frame: host_signals.append(signum))

worker = create_worker(fakeredis.FakeRedis(server=server), ["embedded"], embedded=True, name="embedded-worker")
greenlet = gevent.spawn(worker.work, logging_level="WARNING")

connection = fakeredis.FakeRedis(server=server)
queue = Queue("embedded", connection=connection)
started = time.monotonic()
jobs = [queue.enqueue(worker_jobs.sleep_and_count, 0.5, "embedded") for _ in range(50)]
while time.monotonic() - started < 30 and not all(job.get_status() == "finished" for job in jobs):
    gevent.sleep(0.1)
listed = [w.name for w in Worker.all(connection=connection)]

# The host keeps its own SIGTERM handler: the embedded worker installs none.
os.kill(os.getpid(), signal.SIGTERM)
gevent.sleep(0.5)
stop_requested_by_signal = worker._stop_requested

worker.stop()
greenlet.join(timeout=20)
print(json.dumps({
    "statuses": [job.get_status() for job in jobs],
    "returns_own_id": [job.return_value() == job.id for job in jobs],
    "max_running": max(int(n) for n in connection.lrange("embedded:samples", 0, -1)),
    "listed_while_running": listed,
    "host_signals": host_signals,
    "stop_requested_by_signal": stop_requested_by_signal,
    "stopped": greenlet.dead,
    "work_returned": greenlet.value,
    "listed_after_stop": [w.name for w in Worker.all(connection=connection)],
}))
"""


def wait_for(predicate, timeout, what, interval=0.1):
    """Polls `predicate` until it is true; returns the seconds it took."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
    return time.monotonic() - started


def child_env():
    # The job functions live in tests/, which the worker process must import.
    return dict(os.environ, PYTHONPATH=str(ROOT))


class WorkerProcess:
    """A worker subprocess; its output goes to files so a chatty worker never blocks on a pipe."""

    def __init__(self, tmp_path, connection, queue_name, **options):
        self.connection = connection
        self.name = options.setdefault("name", f"test-worker-{uuid.uuid4().hex[:8]}")
        self.queue = Queue(queue_name, connection=connection)
        address = connection.connection_pool.connection_kwargs
        options.update(url=f"redis://{address['host']}:{address['port']}/{address['db']}", queues=[queue_name])
        self.stdout_path = tmp_path / f"{self.name}.out"
        self.stderr_path = tmp_path / f"{self.name}.err"
        with open(self.stdout_path, "wb") as stdout, open(self.stderr_path, "wb") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-c", LAUNCHER, json.dumps(options)],
                cwd=ROOT,
                env=child_env(),
                stdout=stdout,
                stderr=stderr,
            )

    @property
    def key(self):
        return f"rq:worker:{self.name}"

    def wait_registered(self, timeout=20):
        wait_for(lambda: self.connection.exists(self.key) or self.process.poll() is not None, timeout, "registration")
        assert self.process.poll() is None, self.stderr

    def send(self, signum):
        self.process.send_signal(signum)

    def wait(self, timeout):
        return self.process.wait(timeout=timeout)

    def close(self):
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()

    @property
    def stdout(self):
        return self.stdout_path.read_text()

    @property
    def stderr(self):
        return self.stderr_path.read_text()


@pytest.fixture(scope="module")
def connection(redis_databases):
    # A database of this test process's own: test processes run this module's tests side
    # by side, and each flushes its database first.
    connection = redis.Redis.from_url(redis_databases[0])
    connection.flushdb()
    yield connection
    connection.flushdb()
    connection.close()


@pytest.fixture
def start_worker(tmp_path, connection):
    """Starts worker subprocesses on fresh queues; kills whatever is left at the end."""
    workers = []

    def start(queue_name=None, **options):
        worker = WorkerProcess(tmp_path, connection, queue_name or f"q-{uuid.uuid4().hex[:8]}", **options)
        workers.append(worker)
        worker.wait_registered()
        return worker

    yield start
    for worker in workers:
        worker.close()


@pytest.fixture(scope="module")
def shared_worker(tmp_path_factory, connection):
    """One long-lived worker for the tests that only enqueue and watch."""
    worker = WorkerProcess(
        tmp_path_factory.mktemp("shared"),
        connection,
        "shared",
        max_jobs=500,
        worker_ttl=10,
        maintenance_interval=5,
        job_monitoring_interval=2,
        shutdown_timeout=10,
    )
    try:
        worker.wait_registered()
        yield worker
        worker.send(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0, worker.stderr
    finally:
        worker.close()


def failures(jobs):
    """The recorded exceptions of the jobs that failed, for assertion messages."""
    return [job.latest_result().exc_string for job in jobs if job.get_status(refresh=True) == JobStatus.FAILED]


def finished_or_failed(jobs):
    # One round trip per poll: hundreds of `get_status()` calls would load the Redis under test.
    def done():
        with jobs[0].connection.pipeline(transaction=False) as pipeline:
            for job in jobs:
                pipeline.hget(job.key, "status")
            return all(status in (b"finished", b"failed") for status in pipeline.execute())

    return done


def started_entry_expiry(registry, job):
    """The score of the job's `job_id:execution_id` entry in StartedJobRegistry."""
    entries = registry.connection.zrange(registry.key, 0, -1, withscores=True)
    [score] = [score for entry, score in entries if entry.decode().startswith(f"{job.id}:")]
    return score


def max_running(connection, counter_key):
    return max(int(n) for n in connection.lrange(f"{counter_key}:samples", 0, -1))


@pytest.mark.timeout(120)
def test_200_sleeping_jobs_run_at_once(connection, shared_worker):
    counter = f"c-{uuid.uuid4().hex[:8]}"
    jobs = [shared_worker.queue.enqueue(worker_jobs.sleep_and_count, 1, counter) for _ in range(200)]

    elapsed = wait_for(finished_or_failed(jobs), 60, "200 jobs")

    assert [job.get_status() for job in jobs] == [JobStatus.FINISHED] * 200, failures(jobs)[:3]
    # Each job's get_current_job() still named its own job after sleeping among 199 others.
    assert all(job.return_value() == job.id for job in jobs)
    # Dequeuing 200 jobs takes a moment, so the first ones may end before the last start.
    assert max_running(connection, counter) >= 20
    assert elapsed < 30
    print(f"\n200 one-second jobs: done in {elapsed:.1f}s, up to {max_running(connection, counter)} at once")
    finished = set(FinishedJobRegistry("shared", connection=connection).get_job_ids())
    assert {job.id for job in jobs} <= finished


@pytest.mark.timeout(60)
def test_running_jobs_are_visible_to_rq(connection, shared_worker):
    counter = f"c-{uuid.uuid4().hex[:8]}"
    jobs = [shared_worker.queue.enqueue(worker_jobs.sleep_and_count, 3, counter) for _ in range(20)]
    started = StartedJobRegistry("shared", connection=connection)

    wait_for(lambda: {job.id for job in jobs} <= set(started.get_job_ids()), 10, "jobs in StartedJobRegistry")

    workers = {worker.name: worker for worker in Worker.all(connection=connection)}
    assert shared_worker.name in workers
    listed = workers[shared_worker.name]
    assert listed.get_state() == "busy"
    assert listed.queue_names() == ["shared"]
    assert len(listed.get_current_executions()) == 20
    assert {job.get_status(refresh=True) for job in jobs} == {JobStatus.STARTED}

    wait_for(finished_or_failed(jobs), 20, "jobs to finish")
    assert all(job.return_value() == job.id for job in jobs)
    assert not {job.id for job in jobs} & set(started.get_job_ids())
    assert {job.id for job in jobs} <= set(FinishedJobRegistry("shared", connection=connection).get_job_ids())
    wait_for(lambda: Worker.find_by_key(shared_worker.key, connection=connection).get_state() == "idle", 5, "idle")


@pytest.mark.timeout(60)
def test_each_job_may_hold_a_redis_connection(connection, shared_worker):
    # More jobs blocked in Redis at once than redis-py's default pool allows (100).
    key = f"never-pushed-{uuid.uuid4().hex[:8]}"
    jobs = [shared_worker.queue.enqueue(worker_jobs.hold_connection, 2, key) for _ in range(150)]

    wait_for(finished_or_failed(jobs), 30, "150 jobs")

    assert [job.get_status() for job in jobs] == [JobStatus.FINISHED] * 150, failures(jobs)[:3]


@pytest.mark.timeout(60)
def test_failing_job_lands_in_failed_registry(connection, shared_worker):
    job = shared_worker.queue.enqueue(worker_jobs.fail, "boom")

    wait_for(finished_or_failed([job]), 10, "job to fail")

    assert job.get_status() == JobStatus.FAILED
    assert job.id in FailedJobRegistry("shared", connection=connection)
    assert "ValueError: boom" in job.latest_result().exc_string


@pytest.mark.timeout(60)
def test_rq_suspend_holds_the_queue_and_rq_resume_releases_it(connection, shared_worker):
    first = shared_worker.queue.enqueue(worker_jobs.add, 1, 1)
    wait_for(finished_or_failed([first]), 10, "a job before the suspension")
    suspend(connection)
    try:
        time.sleep(SUSPENSION_CHECK_SECONDS + 0.5)  # the worker has seen the suspension
        held = shared_worker.queue.enqueue(worker_jobs.add, 2, 2)
        time.sleep(2)
        assert held.get_status() == JobStatus.QUEUED
    finally:
        resume(connection)
    wait_for(finished_or_failed([held]), 10, "the held job after the resume")
    assert held.return_value() == 4


@pytest.mark.timeout(60)
@pytest.mark.parametrize("interval", [0, 1])
def test_retry_until_success(connection, shared_worker, interval):
    counter = f"calls-{uuid.uuid4().hex[:8]}"
    job = shared_worker.queue.enqueue(
        worker_jobs.fail_then_succeed, counter, 2, retry=Retry(max=2, interval=interval)
    )

    # With an interval the retries go through RQ's scheduler, run by the worker.
    wait_for(finished_or_failed([job]), 20, "job to succeed after retries")

    assert job.get_status() == JobStatus.FINISHED
    assert job.return_value() == 3
    assert job.id in FinishedJobRegistry("shared", connection=connection)


@pytest.mark.timeout(60)
def test_returned_retry_is_honoured(connection, shared_worker):
    counter = f"calls-{uuid.uuid4().hex[:8]}"
    job = shared_worker.queue.enqueue(worker_jobs.retry_then_succeed, counter, 2)

    wait_for(finished_or_failed([job]), 20, "job to succeed after returning Retry")

    assert job.get_status() == JobStatus.FINISHED
    assert job.return_value() == 3


@pytest.mark.timeout(60)
def test_job_exceeding_its_timeout_fails_as_a_timeout(connection, shared_worker):
    counter = f"c-{uuid.uuid4().hex[:8]}"
    slow = shared_worker.queue.enqueue(worker_jobs.sleep_and_count, 60, counter, job_timeout=1)
    quick = shared_worker.queue.enqueue(worker_jobs.add, 2, 3)

    elapsed = wait_for(finished_or_failed([slow, quick]), 20, "timeout")

    assert elapsed < 15
    assert slow.get_status() == JobStatus.FAILED
    assert slow.id in FailedJobRegistry("shared", connection=connection)
    assert "JobTimeoutException" in slow.latest_result().exc_string
    assert connection.get(f"{counter}:running") == b"0"
    assert quick.return_value() == 5


@pytest.mark.timeout(60)
def test_heartbeats_keep_a_long_job_and_the_worker_alive(connection, start_worker):
    # Without heartbeats the job's StartedJobRegistry entry expires after 1 + 3 s and the
    # worker's own maintenance, every second, would fail it as abandoned.
    worker = start_worker(worker_ttl=3, job_monitoring_interval=1, maintenance_interval=1)
    counter = f"c-{uuid.uuid4().hex[:8]}"
    job = worker.queue.enqueue(worker_jobs.sleep_and_count, 8, counter, job_timeout=60)
    started = StartedJobRegistry(worker.queue.name, connection=connection)
    wait_for(lambda: job.id in started.get_job_ids(), 10, "job running")
    first_expiry = started_entry_expiry(started, job)

    time.sleep(3)

    assert started_entry_expiry(started, job) > first_expiry
    assert 0 < connection.ttl(worker.key) <= 3
    wait_for(finished_or_failed([job]), 20, "long job")
    assert job.get_status() == JobStatus.FINISHED


@pytest.mark.timeout(90)
# SIGTERM; or Ctrl-C in a terminal running `worker --workers N`, which reaches each worker
# twice a moment apart (the terminal's SIGINT, then its pool's own): one stop either way.
@pytest.mark.parametrize("signals", [[signal.SIGTERM], [signal.SIGINT, signal.SIGINT]], ids=["sigterm", "ctrl-c"])
def test_a_stop_lets_jobs_in_flight_finish(connection, start_worker, signals):
    worker = start_worker(max_jobs=10, shutdown_timeout=60)
    counter = f"c-{uuid.uuid4().hex[:8]}"
    jobs = [worker.queue.enqueue(worker_jobs.sleep_and_count, 3, counter) for _ in range(12)]
    started = StartedJobRegistry(worker.queue.name, connection=connection)
    wait_for(lambda: len(started.get_job_ids()) == 10, 10, "10 jobs running")

    for signum in signals:
        worker.send(signum)
        time.sleep(0.05)

    assert worker.wait(timeout=30) == 0
    statuses = [job.get_status(refresh=True) for job in jobs]
    assert statuses.count(JobStatus.FINISHED) == 10
    # Full when the signal came: the last two were never dequeued.
    assert statuses.count(JobStatus.QUEUED) == 2
    assert worker.queue.count == 2
    assert "Traceback" not in worker.stderr
    assert "peak_rss_kb" in worker.stdout
    assert worker.name not in [w.name for w in Worker.all(connection=connection)]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("how", ["second signal", "grace period over"])
def test_forced_stop_fails_jobs_in_flight(connection, start_worker, how):
    worker = start_worker(max_jobs=10, shutdown_timeout=60 if how == "second signal" else 1)
    counter = f"c-{uuid.uuid4().hex[:8]}"
    jobs = [worker.queue.enqueue(worker_jobs.sleep_and_count, 60, counter, job_timeout=120) for _ in range(5)]
    started = StartedJobRegistry(worker.queue.name, connection=connection)
    wait_for(lambda: len(started.get_job_ids()) == 5, 10, "5 jobs running")

    stop_started = time.monotonic()
    worker.send(signal.SIGTERM)
    if how == "second signal":
        time.sleep(SAME_STOP_SECONDS + 0.5)
        worker.send(signal.SIGINT)

    assert worker.wait(timeout=30) == 0
    assert time.monotonic() - stop_started < 15
    assert [job.get_status(refresh=True) for job in jobs] == [JobStatus.FAILED] * 5
    assert all("ShutDownImminentException" in job.latest_result().exc_string for job in jobs)
    assert started.get_job_ids() == []
    assert worker.name not in [w.name for w in Worker.all(connection=connection)]


@pytest.mark.timeout(120)
def test_sigkilled_worker_disappears_and_its_job_is_failed_by_maintenance(connection, start_worker):
    worker_ttl = 6
    # Maintenance only at start-up, so the kill cannot land while it holds RQ's 15-minute cleaning lock.
    victim = start_worker(worker_ttl=worker_ttl, job_monitoring_interval=2, maintenance_interval=600)
    counter = f"c-{uuid.uuid4().hex[:8]}"
    job = victim.queue.enqueue(worker_jobs.sleep_and_count, 120, counter, job_timeout=300)
    started = StartedJobRegistry(victim.queue.name, connection=connection)
    wait_for(lambda: job.id in started.get_job_ids(), 10, "job running")
    time.sleep(3)  # let a few heartbeats go by

    victim.send(signal.SIGKILL)
    victim.wait(timeout=10)
    killed_at = time.monotonic()

    wait_for(
        lambda: victim.name not in [w.name for w in Worker.all(connection=connection)],
        worker_ttl + 5,
        "the killed worker to disappear",
    )
    gone_after = time.monotonic() - killed_at
    # Still there: nothing cleans StartedJobRegistry without a live worker's maintenance.
    assert job.get_status(refresh=True) == JobStatus.STARTED

    start_worker(victim.queue.name, worker_ttl=worker_ttl, maintenance_interval=1)
    wait_for(lambda: job.get_status(refresh=True) == JobStatus.FAILED, 30, "the orphaned job to be failed")
    failed_after = time.monotonic() - killed_at

    assert job.id not in started.get_job_ids(cleanup=False)
    assert job.id in FailedJobRegistry(victim.queue.name, connection=connection)
    assert "AbandonedJobError" in job.latest_result().exc_string
    print(f"\nSIGKILLed worker gone from Worker.all() after {gone_after:.1f}s, job failed after {failed_after:.1f}s")


@pytest.mark.timeout(180)
def test_500_jobs_in_flight_stay_under_300_mb(connection, start_worker):
    worker = start_worker(max_jobs=500, job_monitoring_interval=2, shutdown_timeout=60)
    counter = f"c-{uuid.uuid4().hex[:8]}"
    jobs = [worker.queue.enqueue(worker_jobs.wait_for_gate, counter, 120) for _ in range(500)]

    # The jobs hold until released, so all 500 are in flight at once however slow the machine.
    wait_for(lambda: connection.get(f"{counter}:running") == b"500", 90, "500 jobs in flight")
    time.sleep(5)  # a few heartbeat rounds over 500 jobs
    connection.set(f"{counter}:gate", 1)
    wait_for(finished_or_failed(jobs), 60, "500 jobs")
    worker.send(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0

    assert [job.get_status() for job in jobs] == [JobStatus.FINISHED] * 500, failures(jobs)[:3]
    peak_rss_kb = int(worker.stdout.split("peak_rss_kb")[1].split()[0])
    print(f"\npeak RSS with 500 jobs in flight: {peak_rss_kb / 1024:.1f} MB")
    assert peak_rss_kb < 300 * 1024


@pytest.mark.timeout(60)
def test_embedded_worker_in_a_greenlet_with_fakeredis():
    completed = subprocess.run(
        [sys.executable, "-c", EMBEDDED],
        cwd=ROOT,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=50,
    )

    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result["statuses"] == ["finished"] * 50
    assert all(result["returns_own_id"])
    assert result["max_running"] >= 25
    assert result["listed_while_running"] == ["embedded-worker"]
    assert result["host_signals"] == [signal.SIGTERM]
    assert result["stop_requested_by_signal"] is False
    assert result["stopped"] is True
    assert result["work_returned"] is True
    assert result["listed_after_stop"] == []
    assert "Traceback" not in completed.stderr
