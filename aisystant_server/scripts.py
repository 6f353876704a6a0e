"""`aisystant-server`: serve, migrate, worker, simulator.

`serve` and `worker` run on gevent: thousands of waiting sockets (streams, model
calls) cost a greenlet each, not a thread. gevent must patch the standard library
before anything imports sockets, threads or ssl, hence the patch at the very top of
`main`, before the app and its libraries are imported.
"""

import logging
import os
import shutil
import sys
import tempfile

import click

# Light (no sockets, threads or ssl): safe before gevent patches the standard library.
from aisystant_server import green
from aisystant_server.settings import config_path, read_settings

GEVENT_COMMANDS = {"serve", "events", "worker", "simulator"}
EMBEDDED_SHUTDOWN_SECONDS = 5
log = logging.getLogger(__name__)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if GEVENT_COMMANDS & set(argv):
        green.patch_process()
    cli.main(args=argv, prog_name="aisystant-server")


def _fail(message):
    click.echo(f"aisystant-server: {message}", err=True)
    sys.exit(1)


def _existing_config(ini):
    path = config_path(ini)
    if not os.path.exists(path):
        _fail(f"config file {path!r} not found (use --config or AISYSTANT_INI)")
    return path


def _settings(ini):
    """The settings, or a one-line reason why they cannot be used."""
    from aisystant_server.settings import SettingsError

    try:
        return read_settings(_existing_config(ini))
    except SettingsError as error:
        _fail(f"cannot start: {error}")


def _ready(path, settings):
    """Logging as the ini, LOG_LEVEL and LOG_FORMAT say; then, for the commands that
    serve, the schema check: a database behind the code is one line and exit 1."""
    import sqlalchemy as sa

    from aisystant_server import logs
    from aisystant_server.migrations import ABSENT, BEHIND, CURRENT, NOT_MIGRATED, schema_state
    from aisystant_server.outages import database_unavailable

    logs.configure(path, settings)
    try:
        state, revision = schema_state(settings["sqlalchemy.url"])
    except sa.exc.SQLAlchemyError as error:
        if not database_unavailable(error):
            raise
        # Unreachable now (it may start after us): health says so until it answers.
        log.warning("could not check the database's schema (%s): starting anyway", error.__class__.__name__)
        return
    if state in (ABSENT, BEHIND):
        _fail(NOT_MIGRATED)
    if state != CURRENT:
        log.warning("the database is at revision %s, newer than this version knows: it was migrated by a newer "
                    "version", revision)


def _load(ini):
    """(app, settings), or a one-line reason why the server cannot start."""
    from pyramid.paster import get_app

    from aisystant_server.settings import SettingsError

    path = _existing_config(ini)
    try:
        app = get_app(path)
    except SettingsError as error:
        _fail(f"cannot start: {error}")
    return app, app.registry.settings


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="aisystant", prog_name="aisystant-server", message="%(prog)s %(version)s")
@click.option("-c", "--config", "ini", metavar="INI", help="Config file (default: $AISYSTANT_INI or development.ini).")
@click.pass_context
def cli(ctx, ini):
    """AiSystant's server: the API, the reply workers and the database migrations."""
    ctx.obj = {"ini": ini}


@cli.command()
@click.pass_obj
def migrate(obj):
    """Create or upgrade the database schema (safe to run at every start), and say which."""
    from aisystant_server import logs
    from aisystant_server.migrations import SchemaError
    from aisystant_server.migrations import migrate as run_migrations

    path = _existing_config(obj["ini"])
    settings = _settings(path)
    logs.configure(path, settings)
    url = settings["sqlalchemy.url"]
    try:
        done = run_migrations(url)
    except SchemaError as error:
        _fail(str(error))
    click.echo(f"{done} ({_safe_url(url)})", err=True)


def listen_options(command):
    """--host and --port, which override HOST and PORT (and the ini)."""
    command = click.option("--port", type=click.IntRange(0, 65535), metavar="PORT",
                           help="Port to listen on [default: $PORT, else 3001].")(command)
    return click.option("--host", metavar="ADDRESS",
                        help="Address to listen on [default: $HOST, else the ini's].")(command)


def _override(**variables):
    # Through the environment: the app, gunicorn's processes and the workers all read it.
    for name, value in variables.items():
        if value is not None:
            os.environ[name] = str(value)


@cli.command()
@listen_options
@click.option("--workers", type=click.IntRange(min=0), metavar="N",
              help="Processes [default: $WEB_CONCURRENCY; 0: one per core in production, else 1].")
@click.pass_obj
def serve(obj, host, port, workers):
    """Serve the API and its real-time events (Socket.IO) on HOST:PORT (3001).

    Embedded mode when REDIS_URL is not set: the reply worker runs in this process
    too. With --workers N (distributed mode only), gunicorn runs N processes on the
    same port; Socket.IO clients then need the websocket transport (see docs/deploy).
    SIGTERM or Ctrl-C stops it.
    """
    _override(HOST=host, PORT=port, WEB_CONCURRENCY=workers)
    path = _existing_config(obj["ini"])
    settings = _settings(path)
    processes = _processes(settings["server.workers"], settings)
    if processes > 1 and not settings["redis.url"]:
        _fail("--workers needs REDIS_URL: the embedded mode keeps its queues and events in one process.")
    _ready(path, settings)
    if processes > 1:
        _exec_gunicorn(path, settings, processes)
    from aisystant_server import realtime

    app, settings = _load(path)
    embedded = not settings["redis.url"]
    mode = "embedded (in-process Redis and worker)" if embedded else "distributed (Redis; run workers)"
    web_app = realtime.wrap(app)
    _serve(web_app, settings, f"AiSystant API v{_version()}", mode,
           embedded_worker=_start_embedded_worker(app) if embedded else None)


def _exec_gunicorn(path, settings, processes):
    """Become gunicorn: N gevent processes on one socket, each with the whole app."""
    os.environ["AISYSTANT_INI"] = os.path.abspath(path)
    _share_metrics(f"serve-{settings['aisystant.port']}")
    log.info("AiSystant API v%s on http://%s:%s - %d processes (gunicorn), distributed (Redis; run workers)",
             _version(), settings["aisystant.host"], settings["aisystant.port"], processes)
    os.execv(sys.executable, [
        sys.executable, "-m", "gunicorn", "--workers", str(processes),
        "--bind", f"{settings['aisystant.host']}:{settings['aisystant.port']}",
        "--worker-class", "aisystant_server.gunicorn_worker.GunicornWorker", "--worker-connections", "10000",
        # As `serve`: a stop lets requests (streams included) end for up to 10 s.
        "--graceful-timeout", "10", "--keep-alive", str(int(settings["http.keepalive_timeout"])),
        "--log-level", "warning",
        "aisystant_server.wsgi:make_app()",
    ])


@cli.command()
@listen_options
@click.pass_obj
def events(obj, host, port):
    """Serve only the real-time events (Socket.IO) on HOST:PORT, in the distributed mode.

    For deployments that scale the Socket.IO endpoint apart from the API (see
    docs/deploy/): events emitted by API processes and workers reach its clients through
    Redis. Several events processes need sticky sessions or websocket-only clients.
    """
    from aisystant_server import realtime

    _override(HOST=host, PORT=port)
    path = _existing_config(obj["ini"])
    settings = _settings(path)
    if not settings["redis.url"]:
        _fail("REDIS_URL is not set: the events role receives events through Redis. "
              "Without Redis, `aisystant-server serve` serves the events itself.")
    _ready(path, settings)
    app, settings = _load(path)
    _serve(realtime.wrap(realtime.health_only(app)), settings, f"AiSystant events v{_version()}",
           "Socket.IO only, distributed (Redis)")


def _serve(web_app, settings, name, mode, embedded_worker=None):
    """Serve `web_app` until SIGTERM or SIGINT, then stop what runs in this process."""
    import gevent
    import signal

    from aisystant_server.events import drain as drain_events
    from aisystant_server.serving import make_server, settle_memory

    address = (settings["aisystant.host"], settings["aisystant.port"])
    server = make_server(web_app, settings)
    settle_memory()
    try:
        server.start()
    except OSError as error:
        _fail(f"cannot listen on {address[0]}:{address[1]}: {error.strerror} (set PORT or HOST)")
    model = settings["aisystant.model"] if settings["anthropic.api_key"] else "none (set ANTHROPIC_API_KEY)"
    log.info("%s on http://%s:%s - %s, database %s, model %s", name, address[0], server.server_port, mode,
             _safe_url(settings["sqlalchemy.url"]), model)
    stop = gevent.event.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(signum, stop.set)
    stop.wait()
    log.info("stopping: requests in flight get up to 10 s")
    server.stop(timeout=10)
    if embedded_worker:
        worker, greenlet = embedded_worker
        worker.stop()
        greenlet.join(timeout=EMBEDDED_SHUTDOWN_SECONDS + 5)
    drain_events()


def _start_embedded_worker(app):
    """The embedded default: the same reply jobs, run by a worker inside this process."""
    import gevent

    from aisystant_server.jobs.context import JobContext, configure
    from aisystant_server.jobs.queues import QUEUES
    from aisystant_server.jobs.runtime import runtime
    from aisystant_server.jobs.worker import create_worker
    from aisystant_server.llm import make_provider

    registry = app.registry
    settings = registry.settings
    context = configure(JobContext(settings, registry["redis"], registry["db.autocommit_session_factory"],
                                   make_provider(settings), registry["events"]))
    runtime(context)
    # Replies still in flight at shutdown are redone after the restart (the reaper finds
    # them in the database), so a short grace period is enough.
    worker = create_worker(context.redis, QUEUES, max_jobs=settings["worker.max_jobs"], embedded=True,
                           shutdown_timeout=EMBEDDED_SHUTDOWN_SECONDS)
    return worker, gevent.spawn(worker.work, logging_level="WARNING")


@cli.command()
@click.option("--workers", type=click.IntRange(min=0), default=None, metavar="N",
              help="Worker processes (default WORKER_PROCESSES; 0: one per core in production, else 1).")
@click.option("--concurrency", type=click.IntRange(min=1), default=None, metavar="N",
              help="Replies in flight at once per process (default WORKER_CONCURRENCY, 500).")
@click.option("--burst", is_flag=True, help="Stop when the queues are empty.")
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=None, metavar="PORT",
              help="Serve the processes' Prometheus /metrics on HOST:PORT [default: $WORKER_METRICS_PORT; 0: none].")
@click.pass_obj
def worker(obj, workers, concurrency, burst, metrics_port):
    """Produce assistant replies from the Redis queues (distributed mode).

    One process holds hundreds of replies in flight (gevent); --workers runs one per
    core under RQ's worker pool, and more machines scale further. `rq info --url
    $REDIS_URL` shows them and their queues. SIGTERM lets the replies in flight finish
    (up to 5 minutes); a second one stops at once.
    """
    from rq.worker_pool import WorkerPool

    from aisystant_server.redis_connection import make_redis

    # The worker processes read their settings themselves: the same file, the same overrides.
    _override(WORKER_PROCESSES=workers, WORKER_CONCURRENCY=concurrency, WORKER_METRICS_PORT=metrics_port)
    path = _existing_config(obj["ini"])
    os.environ["AISYSTANT_INI"] = os.path.abspath(path)
    settings = _settings(path)
    if not settings["redis.url"]:
        _fail("REDIS_URL is not set: workers take their jobs from Redis. "
              "Without Redis, `aisystant-server serve` runs the worker in its own process.")
    _ready(path, settings)
    if not settings["anthropic.api_key"]:
        log.warning("ANTHROPIC_API_KEY is not set; replies will fail")
    processes = _processes(settings["worker.processes"], settings)
    port = settings["worker.metrics_port"]
    if processes > 1 and port:
        _share_metrics(f"worker-{port}")
    from aisystant_server import metrics
    from aisystant_server.jobs.process import ReplyWorker
    from aisystant_server.jobs.queues import QUEUES

    if port:
        try:
            metrics.serve_worker_metrics(settings)
        except OSError as error:
            _fail(f"cannot serve metrics on {settings['aisystant.host']}:{port}: {error.strerror} "
                  "(set WORKER_METRICS_PORT or --metrics-port)")
    connection = make_redis(settings)
    if processes == 1:
        ReplyWorker(QUEUES, connection=connection).work(burst=burst, logging_level="INFO")
    else:
        WorkerPool(QUEUES, connection=connection, num_workers=processes, worker_class=ReplyWorker).start(
            burst=burst, logging_level="INFO")


def _share_metrics(name):
    """The processes forked from here count into one directory, added up by a scrape of
    any of them (prometheus_client's multiprocess mode): named before prometheus_client
    is imported, as it picks its storage then, and emptied of a previous run's values.
    A PROMETHEUS_MULTIPROC_DIR of the operator's is used as it is."""
    if "prometheus_client" in sys.modules:
        raise RuntimeError("prometheus_client was imported before its multiprocess directory was chosen")
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)
        return
    parent = os.path.join(tempfile.gettempdir(), f"aisystant-metrics-{os.getuid()}")
    os.makedirs(parent, mode=0o700, exist_ok=True)
    if os.stat(parent).st_uid != os.getuid():
        _fail(f"{parent} belongs to another user: set PROMETHEUS_MULTIPROC_DIR to a directory of yours")
    path = os.path.join(parent, name)
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path


def _processes(wanted, settings):
    """How many processes: `wanted`, where 0 means one per core in production with Redis,
    and one in development or the embedded mode (which keeps its queues in one process)."""
    if wanted:
        return wanted
    if settings["aisystant.env"] != "production" or not settings["redis.url"]:
        return 1
    return os.cpu_count() or 1


@cli.command(context_settings={"ignore_unknown_options": True, "help_option_names": []})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def simulator(args):
    """Run the model simulator (NOT a real model): a fake Anthropic Messages API.

    Point the server at it to try AiSystant offline:
    ANTHROPIC_BASE_URL=http://127.0.0.1:8765 ANTHROPIC_API_KEY=simulator make run.
    Options: --port (8765), --ttft-ms, --tokens-per-second, --reply-tokens.
    """
    from aisystant_server.simulator import main as simulator_main

    sys.exit(simulator_main(list(args)))


def _version():
    from aisystant_server import __version__

    return __version__


def _safe_url(url):
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
