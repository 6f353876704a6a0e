"""Small job functions for the ConcurrentWorker tests, importable by the worker process.

They record what they see in Redis through the connection of `get_current_job()`,
which also checks that each job, in its own greenlet, sees its own job.
"""

import time

from rq import Retry, get_current_job


def sleep_and_count(seconds, counter_key):
    """Sleeps (gevent patches `time.sleep`) and records how many such jobs run at once.

    Returns the id `get_current_job()` gives after the sleep, which is this job's
    id only if other greenlets did not overwrite the current job meanwhile.
    """
    job = get_current_job()
    connection = job.connection
    running = connection.incr(f"{counter_key}:running")
    connection.rpush(f"{counter_key}:samples", running)
    try:
        time.sleep(seconds)
    finally:
        connection.decr(f"{counter_key}:running")
    return get_current_job().id


def add(a, b):
    return a + b


def fail(message):
    raise ValueError(message)


def fail_then_succeed(counter_key, failures):
    """Raises on its first `failures` calls, then returns the number of calls."""
    calls = get_current_job().connection.incr(counter_key)
    if calls <= failures:
        raise RuntimeError(f"failing call {calls}")
    return calls


def retry_then_succeed(counter_key, failures):
    """Returns `Retry` on its first `failures` calls (RQ's other way to ask for a retry)."""
    calls = get_current_job().connection.incr(counter_key)
    if calls <= failures:
        return Retry(max=failures)
    return calls


def hold_connection(seconds, key):
    """Blocks on Redis, holding one of the worker's pooled connections for `seconds`."""
    get_current_job().connection.blpop([key], timeout=seconds)
    return get_current_job().id


def wait_for_gate(counter_key, timeout):
    """Counts itself running, then waits, polling like a reply waits on its stream, until
    `{counter_key}:gate` exists or `timeout` seconds pass."""
    connection = get_current_job().connection
    running = connection.incr(f"{counter_key}:running")
    connection.rpush(f"{counter_key}:samples", running)
    deadline = time.monotonic() + timeout
    try:
        while not connection.exists(f"{counter_key}:gate") and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        connection.decr(f"{counter_key}:running")
    return get_current_job().id
