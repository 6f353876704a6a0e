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
    from gevent.pywsgi import WSGIServer

    app, settings = _load(obj["ini"])
    address = (settings["aisystant.host"], settings["aisystant.port"])
    server = WSGIServer(address, app, log=None)
    try:
        server.start()
    except OSError as error:
        _fail(f"cannot listen on {address[0]}:{address[1]}: {error.strerror} (set PORT or HOST)")
    mode = "embedded (in-process Redis)" if not settings["redis.url"] else "distributed (Redis)"
    click.echo(f"AiSystant API v{_version()} on http://{address[0]}:{server.server_port} "
               f"- {mode}, database {_safe_url(settings['sqlalchemy.url'])}", err=True)
    stop = gevent.event.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(signum, stop.set)
    stop.wait()
    click.echo("stopping", err=True)
    server.stop(timeout=10)


def _version():
    from aisystant_server import __version__

    return __version__


def _safe_url(url):
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
