"""A reply worker process: its job context, its lease/cancel/reaper greenlets, RQ's loop.

`aisystant-server worker` runs one such process, or several under RQ's `WorkerPool`
(`--workers N`), which forks them and starts a new one when one dies: one process per
core, since a busy worker is bound by the CPU of one (parsing the model's streams).
Each process sets up its own context once it runs, after the fork: connections to the
database and Redis are never shared across a fork.
"""

from aisystant_server import events
from aisystant_server.jobs.context import JobContext, configure
from aisystant_server.jobs.runtime import runtime
from aisystant_server.jobs.worker import ConcurrentWorker
from aisystant_server.settings import read_settings


class ReplyWorker(ConcurrentWorker):
    """A `ConcurrentWorker` that runs reply and title jobs with this deployment's settings."""

    def __init__(self, queues, name=None, **kwargs):
        kwargs.setdefault("max_jobs", read_settings()["worker.max_jobs"])
        super().__init__(queues, name, **kwargs)

    def work(self, *args, **kwargs):
        runtime(configure(JobContext.from_settings(read_settings())))
        try:
            return super().work(*args, **kwargs)
        finally:
            # The replies' last events (`message_received`, `stop_typing`) may still be waiting.
            events.drain()
