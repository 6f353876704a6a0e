"""Prometheus metrics: what the service counts, who may read it, and how a scrape adds it up.

What is counted, and where: HTTP requests by route, method and status, with their
latency (access.py: one counter and one histogram a request, nothing more on that
path); replies by outcome, their time to first token and duration, the model's tokens
(jobs/replies.py, once a reply ends); jobs in flight per worker process
(jobs/worker.py); Redis and database failures, where an outage is met; the depth of
the queues, read from Redis when scraped, never while a request is served.

Several processes: `serve --workers N` (gunicorn) and `worker --workers N` (RQ's pool)
count in N processes. prometheus_client's multiprocess mode keeps each process's values
in files of one directory, which a scrape of any of them adds up; the command that forks
sets PROMETHEUS_MULTIPROC_DIR before prometheus_client is imported (the library picks
its storage then). A single process keeps its values in memory, and also reports its
CPU, memory and garbage collection.

Who may read them: a scrape from an address in METRICS_ALLOW (default: this machine
only), or one bearing METRICS_TOKEN (`Authorization: Bearer <token>`). Anything else is
refused like an unauthenticated API call: the counts say how busy the service is and
which routes fail, which is nobody else's business. Workers serve no API: with
`worker --metrics-port P` (WORKER_METRICS_PORT) a worker command serves its processes'
/metrics on HOST:P under the same rule.
"""

import glob
import hmac
import ipaddress
import logging
import os

import prometheus_client
import redis
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, multiprocess
from prometheus_client.core import GaugeMetricFamily

log = logging.getLogger(__name__)
# No `_created` series beside each counter and histogram: twice the series, little use.
prometheus_client.disable_created_metrics()

REQUESTS = Counter("aisystant_http_requests", "HTTP requests answered, by route, method and status.",
                   ["route", "method", "status"])
REQUEST_SECONDS = Histogram("aisystant_http_request_duration_seconds",
                            "Time to answer an HTTP request (to its headers, for a stream), by route and method.",
                            ["route", "method"],
                            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 120))
REPLIES = Counter("aisystant_replies", "Reply attempts ended, by outcome: complete, error (the model failed), "
                  "cancelled, interrupted (left to the reaper: worker stopped, outage), superseded.", ["outcome"])
REPLY_TTFT_SECONDS = Histogram("aisystant_reply_ttft_seconds", "Time from a reply's start to its first text.",
                               buckets=(0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 20, 30, 60))
REPLY_SECONDS = Histogram("aisystant_reply_duration_seconds", "Time to produce a reply, by outcome.", ["outcome"],
                          buckets=(0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600))
MODEL_TOKENS = Counter("aisystant_model_tokens", "Tokens sent to (input) and received from (output) the model.",
                       ["model", "direction"])
JOBS_IN_FLIGHT = Gauge("aisystant_worker_jobs_in_flight", "Jobs running now, by queue (replies, titles).",
                       ["queue"], multiprocess_mode="livesum")
STORE_ERRORS = Counter("aisystant_store_errors", "Failures to reach Redis or the database.", ["store"])

CONTENT_TYPE = CONTENT_TYPE_LATEST


def store_error(error):
    """Count an outage met (`outages.is_outage(error)`): Redis's, or the database's."""
    STORE_ERRORS.labels("redis" if isinstance(error, redis.RedisError) else "database").inc()


def observe_reply(outcome, model, meta):
    """Count a reply attempt that ended, from its metadata (ttft_ms, duration_ms, usage).
    The attempt itself is counted last: a scrape that sees it counted sees its timings and
    tokens too (a worker pool's processes are read while they write)."""
    if meta.get("ttft_ms") is not None:
        REPLY_TTFT_SECONDS.observe(meta["ttft_ms"] / 1000)
    if outcome in ("complete", "error") and meta.get("duration_ms") is not None:
        REPLY_SECONDS.labels(outcome).observe(meta["duration_ms"] / 1000)
    usage = meta.get("usage") or {}
    for direction in ("input", "output"):
        if usage.get(f"{direction}_tokens"):
            MODEL_TOKENS.labels(model, direction).inc(usage[f"{direction}_tokens"])
    REPLIES.labels(outcome).inc()


def allowed(address, authorization, settings):
    """Whether a scrape from `address` with this `Authorization` header may read the metrics."""
    token = settings["metrics.token"]
    if token and authorization:
        scheme, _, presented = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(presented.strip().encode(), token.encode()):
            return True
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return False
    ip = getattr(ip, "ipv4_mapped", None) or ip  # ::ffff:127.0.0.1 on a dual-stack socket
    return any(ip in network for network in settings["metrics.allow"])


def exposition(*collectors):
    """A scrape's text: this process's metrics (all processes' in multiprocess mode),
    then those of `collectors`."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        _forget_dead_processes()
        source = multiprocess.MultiProcessCollector(None)
    else:
        source = prometheus_client.REGISTRY
    return prometheus_client.generate_latest(_Together(source, *collectors))


class _Together:
    def __init__(self, *collectors):
        self.collectors = collectors

    def collect(self):
        for collector in self.collectors:
            yield from collector.collect()


def _forget_dead_processes():
    """Drop the gauges of processes that are gone (a worker killed, restarted by its
    pool or gunicorn): a gauge is a value now, while counters keep adding up the dead."""
    directory = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    for path in glob.glob(os.path.join(directory, "gauge_live*_*.db")):
        pid = int(path[:-len(".db")].rsplit("_", 1)[1])
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            multiprocess.mark_process_dead(pid, directory)
        except PermissionError:
            pass  # alive, someone else's


class ServiceCollector:
    """What is read when scraped: the version, and the jobs waiting in each queue."""

    def __init__(self, connection):
        from rq import Queue

        from aisystant_server.jobs.queues import QUEUES

        self.redis = connection
        self.queues = {name: Queue(name, connection=connection).key for name in QUEUES}

    def collect(self):
        from aisystant_server import __version__

        info = GaugeMetricFamily("aisystant_build_info", "The version running.", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        try:
            pipeline = self.redis.pipeline(transaction=False)
            for key in self.queues.values():
                pipeline.llen(key)
            depths = pipeline.execute()
        except redis.RedisError as error:
            log.warning("metrics: queue depths unavailable (%s)", error.__class__.__name__)
            store_error(error)
            return
        family = GaugeMetricFamily("aisystant_queue_depth", "Jobs waiting in each queue.", labels=["queue"])
        for name, depth in zip(self.queues, depths):
            family.add_metric([name], depth)
        yield family


def serve_worker_metrics(settings):
    """`worker --metrics-port`: this command's /metrics on HOST:PORT, served by a greenlet
    of this process. Processes forked from it (RQ's pool) close their copy of the socket,
    or they would answer some of the scrapes themselves."""
    from gevent import pywsgi

    address = (settings["aisystant.host"], settings["worker.metrics_port"])
    server = pywsgi.WSGIServer(address, _worker_app(settings), log=None, error_log=log)
    server.start()
    owner = os.getpid()
    os.register_at_fork(after_in_child=lambda: os.getpid() != owner and server.close())
    return server


def _worker_app(settings):
    import webob

    from aisystant_server.errors import NotFound, Unauthorized, error_envelope
    from aisystant_server.i18n import DEFAULT_LANGUAGE

    def app(environ, start_response):
        if environ.get("PATH_INFO") != "/metrics":
            response = error_envelope(NotFound(), DEFAULT_LANGUAGE)
        elif not allowed(environ.get("REMOTE_ADDR"), environ.get("HTTP_AUTHORIZATION"), settings):
            response = error_envelope(Unauthorized(headers={"WWW-Authenticate": "Bearer"}), DEFAULT_LANGUAGE)
        else:
            response = webob.Response(body=exposition())
            response.headers["Content-Type"] = CONTENT_TYPE
        return response(environ, start_response)

    return app
