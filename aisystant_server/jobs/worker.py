"""An RQ worker that runs hundreds of jobs at once in one gevent process.

Why it exists: an assistant reply is a job that streams from a model API for
seconds to minutes and spends nearly all that time waiting on the network.
RQ's default `Worker` forks one work horse per job, so a process has one reply
in flight and hundreds of replies need hundreds of processes. `ConcurrentWorker`
runs each job in its own greenlet instead, up to `max_jobs` at once, in a
process that gevent has monkey-patched, so a job waiting on a socket (or in
`time.sleep`) lets the others run.

How it keeps RQ's semantics: it is an ordinary `rq.worker.BaseWorker`. Jobs are
dequeued with `Queue.dequeue_any` and go through RQ's own `prepare_execution`
(execution record, StartedJobRegistry, worker state BUSY) and `perform_job`
(job preparation, timeout, `Job.perform`, then RQ's success, `Retry` and failure
handling that stores results and fills FinishedJobRegistry/FailedJobRegistry).
The worker registers itself, heartbeats, runs RQ's registry maintenance and
listens on its pubsub channel like any RQ worker, so `rq info` and
`Worker.all()` see it. What differs, and why:

- A job's timeout is a `gevent.Timeout` in the job's greenlet
  (`GeventDeathPenalty`): RQ's SIGALRM has one alarm per process.
- One heartbeat greenlet keeps the worker and every in-flight job alive in
  Redis (RQ's `maintain_heartbeats`, batched into one round trip), since no
  single job blocks the worker.
- The worker's key expires `worker_ttl` seconds after its last heartbeat
  (RQ adds 60 s), and a job's StartedJobRegistry entry `worker_ttl` seconds
  after its last heartbeat (RQ adds 60 s too), so a killed worker disappears
  from `rq info` and its jobs are found abandoned by RQ's maintenance (run by
  any other worker every `maintenance_interval` seconds) within a minute or so.
- Each job may hold a pooled Redis connection at the same time, so the
  connection's pool is allowed `max_jobs` + 20 connections (redis-py's default
  cap of 100 would fail the recording of jobs' outcomes).
- `Retry(interval=...)` needs RQ's scheduler; it runs in a greenlet of this
  process instead of a forked process.
- Signals are handled through `gevent.signal_handler`, so the handler runs in
  its own greenlet: the first SIGINT/SIGTERM stops dequeuing and lets the jobs
  in flight finish within `shutdown_timeout` seconds, a second one (or the end
  of that grace period) fails the remaining jobs at once with RQ's
  `ShutDownImminentException`, then the worker deregisters and returns.

RQ's `get_current_job()` reads a `ContextVar`; greenlet gives every greenlet
its own context, so each job sees its own job, and `job.connection` is the
worker's connection the job was fetched with.

How to run it (the `aisystant-server worker` command)::

    from aisystant_server import green
    green.patch_process()  # first thing: gevent, psycogreen, polls (aisystant_server/green.py)

    import redis
    from aisystant_server.jobs.worker import run_worker

    run_worker(redis.Redis.from_url(url), ["default"])  # returns after SIGTERM/SIGINT

Embedded in another gevent process (e.g. the web server on a fakeredis server)::

    worker = create_worker(connection, ["default"], embedded=True)
    greenlet = gevent.spawn(worker.work)
    ...
    worker.stop()
    greenlet.join()

This module never monkey-patches: importing it in an unpatched process is fine,
but running the worker there would run its jobs one after the other.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import gevent
import gevent.pool
import redis
import redis.exceptions
from rq.defaults import DEFAULT_LOGGING_DATE_FORMAT, DEFAULT_LOGGING_FORMAT
from rq.exceptions import DequeueTimeout, ShutDownImminentException, StopRequested
from rq.scheduler import RQScheduler
from rq.timeouts import BaseDeathPenalty
from rq.utils import now
from rq import worker_registration
from rq.worker import BaseWorker, DequeueStrategy, WorkerStatus, signal_name

from aisystant_server import metrics
from aisystant_server.outages import log_failure

if TYPE_CHECKING:
    from redis import Redis
    from rq.executions import Execution
    from rq.job import Job
    from rq.queue import Queue

__all__ = ["ConcurrentWorker", "GeventDeathPenalty", "create_worker", "run_worker"]

DEFAULT_MAX_JOBS = 500
# A killed worker must vanish from `rq info` within a minute.
DEFAULT_WORKER_TTL = 30
DEFAULT_MAINTENANCE_INTERVAL = 15
DEFAULT_JOB_MONITORING_INTERVAL = 10
# Replies take up to a few minutes; a deploy should wait for them.
DEFAULT_SHUTDOWN_TIMEOUT = 300

# Short, so the loop notices a stop request promptly; an idle worker costs one
# BLMOVE a second.
DEQUEUE_POLL_TIMEOUT = 1
IDLE_POLL_DELAY = 0.1
STOP_POLL_INTERVAL = 0.5
# Pooled connections beyond one per job: dequeue loop, heartbeats, pubsub, maintenance.
CONNECTION_HEADROOM = 20
# How long failing the jobs that outlived a stop may take before the worker leaves anyway.
KILL_TIMEOUT = 5
# A signal this soon after the first is the same stop delivered twice (see request_stop).
SAME_STOP_SECONDS = 1.0
# RQ checks for `rq suspend` (with a heartbeat, in one round trip) before every dequeue:
# a quarter of the dequeue loop's round trips under a burst of jobs. Once a second is
# soon enough for a command typed by hand, and the heartbeat greenlet beats anyway.
SUSPENSION_CHECK_SECONDS = 1.0


class GeventDeathPenalty(BaseDeathPenalty):
    """Job timeout as a `gevent.Timeout`, raised in the greenlet that runs the job.

    Like every gevent timeout it fires only when the job yields (I/O, sleep);
    a job that computes without yielding cannot be interrupted.
    """

    _gevent_timeout: gevent.Timeout | None = None

    def setup_death_penalty(self):
        if self._timeout is None or self._timeout <= 0:
            # RQ's convention: -1 means the job may run forever.
            return
        exception = self._exception(f"Task exceeded maximum timeout value ({self._timeout} seconds)")
        self._gevent_timeout = gevent.Timeout(self._timeout, exception)
        self._gevent_timeout.start()

    def cancel_death_penalty(self):
        if self._gevent_timeout is not None:
            self._gevent_timeout.close()
            self._gevent_timeout = None


class ConcurrentWorker(BaseWorker):
    """Runs up to `max_jobs` jobs at once, each in its own greenlet (see the module docstring).

    Besides `BaseWorker`'s arguments it takes `max_jobs`, `embedded` (install no
    signal handlers; stop it with `stop()`) and `shutdown_timeout` (seconds the
    jobs in flight get to finish after a stop request). Its `worker_ttl`,
    `maintenance_interval` and `job_monitoring_interval` default to short values.
    """

    death_penalty_class = GeventDeathPenalty
    # RQ logs a second line per job, after "Job OK", to say how long its result is kept:
    # the same for every job of a queue, so one log record a job fewer.
    log_result_lifespan = False
    # RQ backs off up to 60 s while Redis is unreachable; queued replies (and those the
    # reaper queues again) should start within seconds of its return.
    max_connection_wait_time = 5.0

    def __init__(
        self,
        queues,
        name: str | None = None,
        *,
        max_jobs: int = DEFAULT_MAX_JOBS,
        embedded: bool = False,
        shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT,
        worker_ttl: int = DEFAULT_WORKER_TTL,
        maintenance_interval: int = DEFAULT_MAINTENANCE_INTERVAL,
        job_monitoring_interval: int = DEFAULT_JOB_MONITORING_INTERVAL,
        **kwargs,
    ):
        if max_jobs < 1:
            raise ValueError("max_jobs must be at least 1")
        # Read by _set_connection, which BaseWorker.__init__ calls.
        self.max_jobs = max_jobs
        super().__init__(
            queues,
            name,
            worker_ttl=worker_ttl,
            maintenance_interval=maintenance_interval,
            job_monitoring_interval=job_monitoring_interval,
            **kwargs,
        )
        self.embedded = embedded
        self.shutdown_timeout = shutdown_timeout
        self._jobs = gevent.pool.Pool(max_jobs)
        self._force_stop = False
        self._signal_watchers: list = []

    def _set_connection(self, connection: Redis) -> Redis:
        """RQ's socket timeout, plus a connection pool large enough for every job at once.

        Each job greenlet holds a pooled connection while one of its Redis commands is in
        flight, so at peak the worker needs about one per job. redis-py's plain pool
        raises MaxConnectionsError past `max_connections` (100 by default), which would
        fail the recording of jobs' outcomes, so it is raised to `max_jobs` plus room for
        the worker's own greenlets. A BlockingConnectionPool is left alone: its
        greenlets wait for a free connection instead.
        """
        connection = super()._set_connection(connection)
        pool = connection.connection_pool
        needed = self.max_jobs + CONNECTION_HEADROOM
        if not isinstance(pool, redis.BlockingConnectionPool) and pool.max_connections < needed:
            pool.max_connections = needed
        return connection

    @property
    def heartbeat_interval(self) -> float:
        """Seconds between heartbeats of the worker and of its jobs."""
        return max(1, min(self.job_monitoring_interval, self.worker_ttl / 3))

    @property
    def jobs_in_flight(self) -> int:
        return len(self._jobs)

    def work(
        self,
        burst: bool = False,
        logging_level: str | None = None,
        date_format: str = DEFAULT_LOGGING_DATE_FORMAT,
        log_format: str = DEFAULT_LOGGING_FORMAT,
        with_scheduler: bool = True,
        dequeue_strategy: DequeueStrategy = DequeueStrategy.DEFAULT,
    ) -> bool:
        """Dequeues and runs jobs until stopped (or, with `burst`, until the queues are empty
        and no job is left in flight). Returns whether any job was started.

        Replaces `BaseWorker.work`, whose loop runs one job at a time and relies on
        signal handlers raising in the main thread.
        """
        self.bootstrap(logging_level, date_format, log_format)
        self._dequeue_strategy = dequeue_strategy
        background = []
        try:
            if not self.embedded:
                self._install_signal_handlers()
            # RQ's registration lets the key live worker_ttl + 60 s; shorten it at once.
            self.heartbeat()
            background.append(gevent.spawn(self._heartbeat_loop))
            if with_scheduler:
                background.append(gevent.spawn(self._scheduler_loop))
            started_jobs = self._work_loop(burst)
            if self._shutdown_requested_date:
                self.set_shutdown_requested_date()
            self._wait_for_jobs()
        finally:
            # Also reached on GreenletExit or KeyboardInterrupt: do not leave jobs running unowned.
            self._kill_jobs()
            gevent.killall(background, timeout=KILL_TIMEOUT)
            for watcher in self._signal_watchers:
                watcher.cancel()
            self._signal_watchers = []
            self.teardown()
        self.log.info("Worker %s: stopped", self.name)
        return bool(started_jobs)

    def stop(self):
        """Asks the worker to stop: the first call stops dequeuing and lets the jobs in flight
        finish within `shutdown_timeout`; a second call fails them at once. `work()` returns
        once they are done. Call it from a greenlet of the worker's process, never a native thread.
        """
        if not self._stop_requested:
            self._stop_requested = True
            self._shutdown_requested_date = now()
            self.handle_warm_shutdown_request()
            self.log.info(
                "Worker %s: %d jobs in flight get %ss to finish; stop again to fail them at once",
                self.name,
                self.jobs_in_flight,
                self.shutdown_timeout,
            )
        elif not self._force_stop:
            self._force_stop = True
            self.log.warning("Worker %s: cold shut down", self.name)

    def request_stop(self, signum, frame):
        """Signal handler for SIGINT/SIGTERM, run in its own greenlet: warm stop, then cold stop.

        One stop often arrives twice at once: a terminal's Ctrl-C reaches every process
        of its group and RQ's WorkerPool passes it on to its workers; systemd signals every
        process of a unit. A second signal counts from SAME_STOP_SECONDS after the first."""
        self.log.info("Worker %s: got signal %s", self.name, signal_name(signum))
        if self._stop_requested and (now() - self._shutdown_requested_date).total_seconds() < SAME_STOP_SECONDS:
            return
        self.stop()

    def _install_signal_handlers(self):
        # A plain `signal.signal` handler would run inside whichever greenlet, or the hub,
        # happens to be running; gevent runs this one in a greenlet of its own.
        self._signal_watchers = [
            gevent.signal_handler(signum, self.request_stop, signum, None) for signum in (signal.SIGINT, signal.SIGTERM)
        ]

    def execute_job(self, job: Job, queue: Queue):
        """Starts the job in a greenlet of the pool and returns at once.

        The execution is prepared here, before returning to the dequeue loop, so the
        job is in StartedJobRegistry (and out of reach of the intermediate queue
        cleanup) as soon as it leaves the queue.
        """
        execution = self.prepare_execution(job)
        self._jobs.spawn(self._run_job, job, queue, execution)
        # The job first, until it waits: its reply's first steps go out before this loop's
        # next dequeue and heartbeat, where they went after (0.5-0.8 ms at one client).
        gevent.sleep(0)

    def heartbeat(self, timeout: int | None = None, pipeline=None):
        """Extends the worker's key by `worker_ttl`, whatever `timeout` RQ asks for.

        RQ's forking worker blocks while a job runs, so it extends its key to cover
        the job. Here the heartbeat greenlet beats every `heartbeat_interval`
        seconds whatever the jobs do, so the key can expire soon after the process dies.
        """
        super().heartbeat(self.worker_ttl, pipeline=pipeline)

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        """RQ's job heartbeat TTL with `worker_ttl` seconds of slack instead of 60, so a job
        whose worker died counts as abandoned about when the worker's key expires."""
        if job.timeout and job.timeout > 0:
            remaining_execution_time = job.timeout - working_time
            return max(int(min(remaining_execution_time, self.job_monitoring_interval)), 0) + self.worker_ttl
        return int(self.job_monitoring_interval) + self.worker_ttl

    def _work_loop(self, burst: bool) -> int:
        started_jobs = 0
        connection_wait_time = 1.0
        next_suspension_check = 0.0
        while not self._stop_requested:
            try:
                if time.monotonic() >= next_suspension_check:
                    self.check_for_suspension(burst)
                    next_suspension_check = time.monotonic() + SUSPENSION_CHECK_SECONDS
                if self.should_run_maintenance_tasks:
                    self.run_maintenance_tasks()
                if self._jobs.full():
                    self._jobs.wait_available(timeout=DEQUEUE_POLL_TIMEOUT)
                    continue
                result = self._dequeue()
                connection_wait_time = 1.0
                if result is None:
                    if not self.jobs_in_flight:
                        if burst:
                            self.log.info("Worker %s: done, quitting", self.name)
                            break
                        if self.get_state() != WorkerStatus.IDLE:
                            self.set_state(WorkerStatus.IDLE)
                    continue
                self.execute_job(*result)
                started_jobs += 1
            except StopRequested:
                break
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as error:
                # Like RQ's dequeue loop: wait for Redis to come back; jobs in flight go on.
                self.log.error(
                    "Worker %s: could not connect to Redis instance: %s retrying in %d seconds...",
                    self.name,
                    error,
                    connection_wait_time,
                )
                time.sleep(connection_wait_time)
                connection_wait_time = min(
                    connection_wait_time * self.exponential_backoff_factor, self.max_connection_wait_time
                )
            except Exception:
                self.log.error("Worker %s: found an unhandled exception, quitting...", self.name, exc_info=True)
                break
        return started_jobs

    def _dequeue(self) -> tuple[Job, Queue] | None:
        started_at = time.monotonic()
        try:
            result = self.queue_class.dequeue_any(
                self._ordered_queues,
                DEQUEUE_POLL_TIMEOUT,
                connection=self.connection,
                job_class=self.job_class,
                serializer=self.serializer,
                death_penalty_class=self.death_penalty_class,
            )
        except DequeueTimeout:
            result = None
        if result is None:
            if time.monotonic() - started_at < DEQUEUE_POLL_TIMEOUT / 2:
                # fakeredis answers BLMOVE at once instead of blocking; without a pause this
                # loop would spin and, as fakeredis never yields, starve the jobs.
                gevent.sleep(IDLE_POLL_DELAY)
            return None
        job, queue = result
        self.reorder_queues(reference_queue=queue)
        job.redis_server_version = self.get_redis_server_version()
        if self.log_job_description:
            self.log.info("Worker %s: %s: %s (%s)", self.name, queue.name, job.description, job.id)
        else:
            self.log.info("Worker %s: %s: %s", self.name, queue.name, job.id)
        return job, queue

    def _run_job(self, job: Job, queue: Queue, execution: Execution):
        try:
            # RQ's perform_job records every outcome of the job itself, including our timeout.
            with metrics.JOBS_IN_FLIGHT.labels(queue.name).track_inprogress():
                self.perform_job(job, queue, execution)
        except (Exception, ShutDownImminentException) as error:
            # Only reached when recording the outcome failed (e.g. Redis went away);
            # maintenance will find the job abandoned.
            log_failure(self.log, error, "Worker %s: could not record the outcome of job %s", self.name, job.id)
        finally:
            self.executions.pop(execution.id, None)

    def _heartbeat_loop(self):
        while True:
            gevent.sleep(self.heartbeat_interval)
            try:
                self.maintain_all_heartbeats()
            except Exception as error:
                # A lost heartbeat is retried at the next tick; the loop must survive it.
                log_failure(self.log, error, "Worker %s: heartbeat failed", self.name)

    def maintain_all_heartbeats(self):
        """RQ's `maintain_heartbeats` for the worker and every job in flight, in one round trip.

        Calling RQ's per-job version would cost one round trip per job: with hundreds of
        jobs on a busy Redis, a tick could outlast the slack of the first jobs' TTLs.
        """
        executions = list(self.executions.values())
        with self.connection.pipeline() as pipeline:
            self.heartbeat(pipeline=pipeline)
            # Idempotent, and what `rq info` and `Worker.count` read: a Redis that restarted
            # empty learns of this worker again at the next beat, not never.
            worker_registration.register(self, pipeline)
            job_heartbeat_indexes = []
            for execution in executions:
                job = execution.job
                working_time = (now() - job.started_at).total_seconds() if job.started_at else 0.0
                ttl = self.get_heartbeat_ttl(job, working_time=working_time)
                execution.heartbeat(job.started_job_registry, ttl, pipeline=pipeline)
                job_heartbeat_indexes.append(len(pipeline))
                job.heartbeat(now(), ttl, pipeline=pipeline, xx=True)
            results = pipeline.execute()

            # As RQ does: a job that finished with result_ttl=0 meanwhile is deleted, and the
            # heartbeat's HSET recreated a hash holding only `last_heartbeat`; delete it again.
            for execution, index in zip(executions, job_heartbeat_indexes):
                if results[index] == 1:
                    pipeline.delete(execution.job.key)
            # Likewise the worker's hash, if it had expired before this heartbeat.
            if results[0] == 1:
                pipeline.hset(self.key, mapping=self.serialize())
                pipeline.expire(self.key, self.worker_ttl)
            pipeline.execute()

    def _scheduler_loop(self):
        """RQ's scheduler loop (`RQScheduler.work`) in a greenlet, without its signal handlers."""
        scheduler = RQScheduler(
            self.queues,
            connection=self.connection,
            logging_level=self.log.getEffectiveLevel(),
            serializer=self.serializer,
        )
        registered = False
        try:
            while True:
                try:
                    # Like RQ, only the worker holding a queue's scheduler lock schedules for it;
                    # the others retry the lock now and then in case its holder died.
                    if scheduler.should_reacquire_locks:
                        scheduler.acquire_locks()
                    if scheduler.acquired_locks:
                        if not registered:
                            scheduler.register_birth()
                            registered = True
                        scheduler.heartbeat()
                        scheduler.enqueue_scheduled_jobs()
                except Exception as error:
                    log_failure(self.log, error, "Worker %s: scheduler failed, retrying", self.name)
                gevent.sleep(scheduler.interval)
        finally:
            scheduler.stop()

    def _wait_for_jobs(self):
        if not self.jobs_in_flight:
            return
        self.log.info(
            "Worker %s: waiting up to %ss for %d jobs in flight", self.name, self.shutdown_timeout, self.jobs_in_flight
        )
        deadline = time.monotonic() + self.shutdown_timeout
        while self.jobs_in_flight and not self._force_stop:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._jobs.join(timeout=min(remaining, STOP_POLL_INTERVAL))

    def _kill_jobs(self):
        if not self.jobs_in_flight:
            return
        self.log.warning("Worker %s: failing %d jobs still running", self.name, self.jobs_in_flight)
        for greenlet in list(self._jobs):
            # Raised in the job, caught by RQ's perform_job: the job is failed (or retried) at once.
            greenlet.kill(ShutDownImminentException("worker stopped before the job finished", {}), block=False)
        self._jobs.join(timeout=KILL_TIMEOUT)


def create_worker(
    connection: Redis,
    queue_names: Sequence[str],
    *,
    max_jobs: int = DEFAULT_MAX_JOBS,
    embedded: bool = False,
    worker_ttl: int = DEFAULT_WORKER_TTL,
    maintenance_interval: int = DEFAULT_MAINTENANCE_INTERVAL,
    job_monitoring_interval: int = DEFAULT_JOB_MONITORING_INTERVAL,
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT,
    name: str | None = None,
) -> ConcurrentWorker:
    """Builds a `ConcurrentWorker` on `queue_names`; start it with `worker.work()`."""
    return ConcurrentWorker(
        list(queue_names),
        name,
        connection=connection,
        max_jobs=max_jobs,
        embedded=embedded,
        worker_ttl=worker_ttl,
        maintenance_interval=maintenance_interval,
        job_monitoring_interval=job_monitoring_interval,
        shutdown_timeout=shutdown_timeout,
    )


def run_worker(
    connection: Redis,
    queue_names: Sequence[str],
    *,
    burst: bool = False,
    logging_level: str | None = "INFO",
    **options,
) -> ConcurrentWorker:
    """Runs a `ConcurrentWorker` (built by `create_worker` with `options`) until it stops.

    The process must have called `gevent.monkey.patch_all()` first. Unless
    `embedded`, SIGINT/SIGTERM stop it (twice: at once).
    """
    worker = create_worker(connection, queue_names, **options)
    worker.work(burst=burst, logging_level=logging_level)
    return worker
