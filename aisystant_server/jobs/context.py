"""What jobs need (settings, database, Redis, the model), built once per process.

RQ jobs take primitive ids; the process that runs them (a worker, or the embedded
server) calls `configure` at start. A plain `rq worker` on our queues configures itself
from AISYSTANT_INI on the first job.
"""

from aisystant_server.db import autocommit_engine_from_settings, make_session_factory
from aisystant_server.events import NO_CLIENTS, publisher
from aisystant_server.llm import make_provider
from aisystant_server.redis_connection import make_redis
from aisystant_server.settings import read_settings

_current = None


class JobContext:
    """`session_factory` makes sessions in autocommit: each statement of a job stands
    alone, so every write must be one statement guarded by its WHERE clause."""

    def __init__(self, settings, redis, session_factory, provider, events=NO_CLIENTS):
        self.settings, self.redis = settings, redis
        self.session_factory, self.provider = session_factory, provider
        self.events = events  # the process's emitter (see events.py)

    @classmethod
    def from_settings(cls, settings):
        return cls(settings, make_redis(settings), make_session_factory(autocommit_engine_from_settings(settings)),
                   make_provider(settings), publisher(settings))


def configure(context):
    global _current
    _current = context
    return context


def current():
    if _current is None:
        configure(JobContext.from_settings(read_settings()))
    return _current
