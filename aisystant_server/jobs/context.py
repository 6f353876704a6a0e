"""What jobs need (settings, database, Redis, the model), built once per process.

RQ jobs take primitive ids; the process that runs them (a worker, or the embedded
server) calls `configure` at start. A plain `rq worker` on our queues configures itself
from AISYSTANT_INI on the first job.
"""

from aisystant_server.db import engine_from_settings, make_session_factory
from aisystant_server.llm import make_provider
from aisystant_server.redis_connection import make_redis

_current = None


class JobContext:
    def __init__(self, settings, redis, session_factory, provider):
        self.settings, self.redis = settings, redis
        self.session_factory, self.provider = session_factory, provider

    @classmethod
    def from_settings(cls, settings, redis=None, session_factory=None):
        return cls(settings, redis or make_redis(settings),
                   session_factory or make_session_factory(engine_from_settings(settings)),
                   make_provider(settings))


def configure(context):
    global _current
    _current = context
    return context


def current():
    if _current is None:
        from aisystant_server.scripts import read_settings

        configure(JobContext.from_settings(read_settings()))
    return _current
