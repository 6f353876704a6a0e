"""`aisystant-server`: serve, migrate, worker, simulator.

`serve` and `worker` run on gevent: thousands of waiting sockets (streams, model
calls) cost a greenlet each, not a thread. gevent must patch the standard library
before anything imports sockets, threads or ssl, hence the patch at the very top of
`main`, before the app and its libraries are imported.
"""

import os
import sys

import click

GEVENT_COMMANDS = {"serve", "worker", "simulator"}
EMBEDDED_SHUTDOWN_SECONDS = 5


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if GEVENT_COMMANDS & set(argv):
        from gevent import monkey

        monkey.patch_all()
        from psycogreen.gevent import patch_psycopg

        patch_psycopg()
    cli.main(args=argv, prog_name="aisystant-server")


def config_path(ini=None):
    return ini or os.environ.get("AISYSTANT_INI") or "development.ini"


def read_settings(ini=None):
    """The app's settings as the server sees them: the ini, then the environment."""
    from pyramid.paster import get_appsettings

    from aisystant_server.settings import load_settings

    return load_settings(get_appsettings(config_path(ini)))


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


def _load(ini):
    """(app, settings), or a one-line reason why the server cannot start."""
    from pyramid.paster import get_app, setup_logging

    from aisystant_server.settings import SettingsError

    path = _existing_config(ini)
    setup_logging(path)
    try:
        app = get_app(path)
    except SettingsError as error:
        _fail(f"cannot start: {error}")
    return app, app.registry.settings


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-c", "--config", "ini", metavar="INI", help="Config file (default: $AISYSTANT_INI or development.ini).")
@click.pass_context
def cli(ctx, ini):
    """AiSystant's server: the API, the reply workers and the database migrations."""
    ctx.obj = {"ini": ini}


@cli.command()
@click.pass_obj
def migrate(obj):
    """Create or upgrade the database schema (safe to run at every start)."""
    from aisystant_server.migrations import upgrade

    url = _settings(obj["ini"])["sqlalchemy.url"]
    upgrade(url)
    click.echo(f"database is up to date ({_safe_url(url)})", err=True)


@cli.command()
@click.pass_obj
def serve(obj):
    """Serve the API on HOST:PORT (3001); embedded mode when REDIS_URL is not set."""
    import gevent
    import signal

    from aisystant_server.serving import make_server

    app, settings = _load(obj["ini"])
    address = (settings["aisystant.host"], settings["aisystant.port"])
    server = make_server(app, settings)
    try:
        server.start()
    except OSError as error:
        _fail(f"cannot listen on {address[0]}:{address[1]}: {error.strerror} (set PORT or HOST)")
    embedded_worker = _start_embedded_worker(app) if not settings["redis.url"] else None
    mode = "embedded (in-process Redis and worker)" if embedded_worker else "distributed (Redis; run workers)"
    model = settings["aisystant.model"] if settings["anthropic.api_key"] else "none (set ANTHROPIC_API_KEY)"
    click.echo(f"AiSystant API v{_version()} on http://{address[0]}:{server.server_port} - {mode}, "
               f"database {_safe_url(settings['sqlalchemy.url'])}, model {model}", err=True)
    stop = gevent.event.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(signum, stop.set)
    stop.wait()
    click.echo("stopping", err=True)
    server.stop(timeout=10)
    if embedded_worker:
        worker, greenlet = embedded_worker
        worker.stop()
        greenlet.join(timeout=EMBEDDED_SHUTDOWN_SECONDS + 5)


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
    context = configure(JobContext(settings, registry["redis"], registry["db.session_factory"],
                                   make_provider(settings)))
    runtime(context)
    # Replies still in flight at shutdown are redone after the restart (the reaper finds
    # them in the database), so a short grace period is enough.
    worker = create_worker(context.redis, QUEUES, max_jobs=settings["worker.max_jobs"], embedded=True,
                           shutdown_timeout=EMBEDDED_SHUTDOWN_SECONDS)
    return worker, gevent.spawn(worker.work, logging_level="WARNING")


@cli.command()
@click.option("--concurrency", type=int, default=None, help="Replies in flight at once (default WORKER_CONCURRENCY, 500).")
@click.option("--burst", is_flag=True, help="Stop when the queues are empty.")
@click.pass_obj
def worker(obj, concurrency, burst):
    """Produce assistant replies from the Redis queues (distributed mode).

    One process holds hundreds of replies in flight (gevent); run more processes, on
    more machines, to scale. `rq info --url $REDIS_URL` shows them and their queues.
    """
    from pyramid.paster import setup_logging

    from aisystant_server.jobs.context import JobContext, configure
    from aisystant_server.jobs.queues import QUEUES
    from aisystant_server.jobs.runtime import runtime
    from aisystant_server.jobs.worker import run_worker

    path = _existing_config(obj["ini"])
    settings = _settings(path)
    if not settings["redis.url"]:
        _fail("REDIS_URL is not set: workers take their jobs from Redis. "
              "Without Redis, `aisystant-server serve` runs the worker in its own process.")
    setup_logging(path)
    context = configure(JobContext.from_settings(settings))
    if context.provider is None:
        click.echo("aisystant-server: warning: ANTHROPIC_API_KEY is not set; replies will fail", err=True)
    runtime(context)
    run_worker(context.redis, QUEUES, max_jobs=concurrency or settings["worker.max_jobs"], burst=burst)


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
